"""The pieces of ``scripts/bench``: the rig it measures, the measurements, the report.

- :mod:`bench_lib.rig`: tool checks, a private MariaDB, the gateway, a socat relay, and
  per-process RSS and CPU readings from ``/proc``;
- :mod:`bench_lib.measure`: sysbench, a large streamed result, ``SELECT 1`` latency and
  idle sessions, each run through every endpoint in rotating order;
- :mod:`bench_lib.ledger`: the audit ledger's append rate (group commit, many appenders)
  and the rate of ``sqlgate ledger verify``, each in a process of its own;
- :mod:`bench_lib.policy`: the cost of one statement decision (``SessionPolicy.decide``),
  cached, by shape and uncached, in a process of its own;
- :mod:`bench_lib.masking`: a large join with one masked column, masked and unmasked, and
  a result no rule applies to through gateways with and without ``[[masking]]`` rules;
- :mod:`bench_lib.approvals`: a held statement's round trip with a private Mosquitto and
  an operator in the bench process that approves every request at once, against the
  same statement sent directly and through the gateway without a hold;
- :mod:`bench_lib.worker`: runs such a process and reads the JSON object it prints;
- :mod:`bench_lib.errors`: ``BenchError``, the one error that stops a run;
- :mod:`bench_lib.report`: the table, the acceptance thresholds and the JSON file;
- :mod:`bench_lib.cli`: the command line, ``main(argv) -> int``.
"""
