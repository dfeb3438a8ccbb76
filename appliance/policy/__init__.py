"""Statement policy: a MySQL lexer, a classifier built on sqlglot, and the rules."""
