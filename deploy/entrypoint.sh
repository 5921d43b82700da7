#!/bin/sh
# The image's entrypoint: migrate (when asked), then become the tollgate command.
#
# Every replica may run the migrations as it starts (TOLLGATE_MIGRATE_ON_START=true, the default
# for `serve`): on PostgreSQL they take turns on an advisory lock held by the migration's own
# transaction, so the first migrates and the others find nothing left to do
# (tests/integration/test_migration_lock.py starts four at once). Behind a pooler, set
# TOLLGATE_DATABASE_DIRECT_URL so migrations reach the database itself.
set -eu
command="${1:-serve}"
migrate="${TOLLGATE_MIGRATE_ON_START:-}"
if [ -z "$migrate" ]; then
  if [ "$command" = "serve" ]; then migrate=true; else migrate=false; fi
fi
if [ "$migrate" = "true" ]; then
  tollgate db upgrade
fi
exec tollgate "$@"
