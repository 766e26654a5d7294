#!/bin/sh
# Run once by Patroni on the first primary, with a connection string as $1:
# zhifu's role and database (zhifu makes its own tables on first start).
set -eu
psql "$1" -v ON_ERROR_STOP=1 -c "CREATE ROLE zhifu LOGIN PASSWORD 'change-me-zhifu'"
psql "$1" -v ON_ERROR_STOP=1 -c "CREATE DATABASE zhifu OWNER zhifu"
# To read its standbys' lag (pg_stat_replication) for /healthz and the console.
psql "$1" -v ON_ERROR_STOP=1 -c "GRANT pg_monitor TO zhifu"
