// A real OpenID Connect provider for sqlgate's integration tests: node idp.js CONFIG.json
//
// It is the `oidc-provider` package (pinned in package.json), serving HTTPS itself with the
// lab's certificate: discovery at <issuer>/.well-known/openid-configuration, the JWKS the
// discovery document names, and the token endpoint with the client credentials grant for
// confidential clients. Access tokens are RS256 JWTs for one resource indicator, with the
// audience, the client's `email` (the MySQL user name) and `groups` as claims.
//
// CONFIG.json (written by tests/lab/idp.py, mode 0600: it holds private keys and secrets):
//   {
//     "issuer": "https://127.0.0.1:8443",    // https://<host>:<port>, no trailing slash
//     "host": "127.0.0.1", "port": 8443,     // where to listen
//     "cert": "/path/server.crt", "key": "/path/server.key",
//     "jwks": {"keys": [<private RSA JWKs with kid>]},  // the first one signs
//     "resource": "urn:sqlgate:lab",         // the resource indicator clients ask for
//     "audience": "sqlgate",                 // the tokens' "aud"
//     "ttl": 600,                            // access token lifetime, seconds
//     "clients": [{"client_id": "...", "client_secret": "...",
//                  "email": "carol@example.com", "groups": ["agents"]}]
//   }
//
// Once it listens it prints one line, `listening <issuer>`, on stdout. SIGTERM or SIGINT
// stop it. Rotating keys is restarting it with another "jwks" (tests/lab/idp.py does that).

import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';

import Provider, { errors } from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));

const claimsByClient = new Map(
  config.clients.map((c) => [c.client_id, { email: c.email, groups: c.groups }]),
);

const provider = new Provider(config.issuer, {
  clients: config.clients.map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
  })),
  jwks: config.jwks,
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: false },
    revocation: { enabled: false },
    resourceIndicators: {
      enabled: true,
      // A token request that names no resource gets an opaque token nobody but this
      // provider could read; sqlgate's clients always ask for config.resource.
      defaultResource: async () => undefined,
      getResourceServerInfo: async (_ctx, resourceIndicator) => {
        if (resourceIndicator !== config.resource) {
          throw new errors.InvalidTarget(`unknown resource ${resourceIndicator}`);
        }
        return {
          scope: '',
          audience: config.audience,
          accessTokenTTL: config.ttl,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  // Client credentials tokens carry no account: the client's own identity goes into the
  // token as claims (email = the MySQL user name, groups = what sqlgate maps to targets).
  extraTokenClaims: async (_ctx, token) => {
    if (token.kind !== 'ClientCredentials') return undefined;
    const claims = claimsByClient.get(token.clientId);
    return claims ? { ...claims } : undefined;
  },
  ttl: {
    ClientCredentials: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? config.ttl,
  },
});

provider.on('server_error', (_ctx, err) => {
  console.error(`server_error: ${err.stack || err}`);
});
provider.on('grant.error', (_ctx, err) => {
  console.error(`grant.error: ${err.name}: ${err.message} ${err.error_description || ''}`);
});
provider.on('grant.success', (ctx) => {
  const { client } = ctx.oidc;
  console.error(`grant.success: client ${client?.clientId}`);
});

const server = createServer(
  { cert: readFileSync(config.cert), key: readFileSync(config.key) },
  provider.callback(),
);

server.listen(config.port, config.host, () => {
  console.log(`listening ${config.issuer}`);
});

function stop() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}

process.on('SIGTERM', stop);
process.on('SIGINT', stop);
