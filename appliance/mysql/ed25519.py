"""Edwards25519 arithmetic for MariaDB's ``client_ed25519`` login.

MariaDB signs with a key derived as ``SHA512(password)`` for a password of any length,
while every Ed25519 library we may import takes exactly a 32-byte seed. So the two
scalar multiplications the signature needs are done here, in pure Python, following the
reference arithmetic of RFC 8032 §5.1 (extended homogeneous coordinates). It runs once per
backend login, where a few milliseconds do not matter.

Python integers are not constant-time; the multiplication below at least performs the same
sequence of point operations for every scalar, so its branches do not follow the key bits.
"""

from __future__ import annotations

from typing import Final

#: The field prime, 2^255 - 19.
P: Final = 2**255 - 19
#: The order of the base point; scalars live modulo L.
L: Final = 2**252 + 27742317777372353535851937790883648493
#: The curve constant d = -121665 / 121666.
D: Final = -121665 * pow(121666, P - 2, P) % P
_D2: Final = 2 * D % P
#: A square root of -1, used to recover x from y.
_SQRT_M1: Final = pow(2, (P - 1) // 4, P)

# A point (X, Y, Z, T) with x = X/Z, y = Y/Z, x*y = T/Z.
Point = tuple[int, int, int, int]

_IDENTITY: Final[Point] = (0, 1, 1, 0)


def _recover_x(y: int, sign: int) -> int:
    """x from y and the sign bit (RFC 8032 §5.1.3); used only to build the base point."""
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P != 0:
        x = x * _SQRT_M1 % P
    if x & 1 != sign:
        x = P - x
    return x


_BASE_Y: Final = 4 * pow(5, P - 2, P) % P
_BASE_X: Final = _recover_x(_BASE_Y, 0)
#: The base point B.
BASE: Final[Point] = (_BASE_X, _BASE_Y, 1, _BASE_X * _BASE_Y % P)


def point_add(p: Point, q: Point) -> Point:
    """P + Q with the unified formula, which also doubles (RFC 8032 §5.1.4)."""
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = t1 * _D2 * t2 % P
    d = z1 * 2 * z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def scalar_mult(k: int, p: Point) -> Point:
    """k * P by a double-and-add ladder over all 256 bits, the same steps for every k."""
    if not 0 <= k < 2**256:
        raise ValueError("scalar must fit in 256 bits")
    result = _IDENTITY
    for i in reversed(range(256)):
        result = point_add(result, result)
        added = point_add(result, p)
        result = added if (k >> i) & 1 else result
    return result


def encode_point(p: Point) -> bytes:
    """The 32-byte encoding: y little-endian, with the low bit of x in the top bit."""
    x, y, z, _ = p
    z_inv = pow(z, P - 2, P)
    x = x * z_inv % P
    y = y * z_inv % P
    return (y | (x & 1) << 255).to_bytes(32, "little")


def clamp(h: bytes) -> int:
    """The secret scalar from the first 32 bytes of the key hash (RFC 8032 §5.1.5)."""
    if len(h) != 32:
        raise ValueError("clamp takes exactly 32 bytes")
    a = int.from_bytes(h, "little")
    a &= (1 << 254) - 8  # clear the 3 low bits and the top bit (bits 255 and 254)
    a |= 1 << 254  # set bit 254
    return a
