#!/usr/bin/env bash
# Tests the deployment recipe of this directory on one machine, on loopback:
# etcd, three PostgreSQL nodes under Patroni (strict synchronous mode), two
# zhifu nodes, HAProxy routing clients by /readyz — from the very files of
# the recipe, with their @…@ values filled in. Then, under a client's load
# with idempotency keys: the PostgreSQL primary's machine dies (Patroni and
# PostgreSQL killed -9), then the zhifu leader does; every acknowledged
# payment must be there exactly once, and the ledger balanced.
#
#   docs/deploy/test-recipe.sh path/to/zhifu
#
# Needs root (PostgreSQL and Patroni run as the postgres user), Debian's
# postgresql, patroni, etcd-server and haproxy, curl and python3. Prints
# PASS and exits 0, or says what failed and exits 1.
set -euo pipefail

zhifu=$(realpath "${1:?usage: test-recipe.sh path/to/zhifu}")
recipe=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /tmp/zhifu-recipe.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    pkill -9 -f "$work" 2>/dev/null || true
    sleep 1
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; for f in "$work"/*.log; do echo "== $f" >&2; tail -20 "$f" >&2; done; exit 1; }
# A port nothing listens on.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # seconds, description, command...
    local seconds=$1 what=$2; shift 2
    for _ in $(seq 1 $((seconds * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    fail "$what did not happen within $seconds s"
}
as_postgres() { runuser -u postgres -- "$@"; }

for tool in patroni etcd haproxy curl python3 runuser; do
    command -v "$tool" >/dev/null || fail "$tool is not installed"
done
[ -x /usr/lib/postgresql/15/bin/postgres ] || fail "PostgreSQL 15 is not installed"

# etcd: one member here (three, one a machine, in the recipe).
etcd_port=$(port)
etcd --name etcd1 --data-dir "$work/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$(port)" >"$work/etcd.log" 2>&1 &
pids+=($!)
wait_for 20 "etcd answering" curl -sf "http://127.0.0.1:$etcd_port/health"

# Three PostgreSQL nodes under Patroni, from patroni.yml.
cp "$recipe/post-bootstrap.sh" "$work/post-bootstrap.sh"
declare -A pg_port api_port patroni_pid
for name in pg1 pg2 pg3; do
    pg_port[$name]=$(port)
    api_port[$name]=$(port)
    sed -e "s|@NAME@|$name|g" -e "s|@HOST@|127.0.0.1|g" -e "s|@PG_PORT@|${pg_port[$name]}|g" \
        -e "s|@API_PORT@|${api_port[$name]}|g" -e "s|@DATA_DIR@|$work/$name|g" \
        -e "s|@ETCD@|127.0.0.1:$etcd_port|g" -e "s|@BOOTSTRAP@|$work/post-bootstrap.sh|g" \
        "$recipe/patroni.yml" >"$work/$name.yml"
done
chown -R postgres:postgres "$work"
start_patroni() {
    as_postgres patroni "$work/$1.yml" >>"$work/$1.log" 2>&1 &
    patroni_pid[$1]=$!
    pids+=($!)
}
for name in pg1 pg2 pg3; do start_patroni "$name"; sleep 1; done
primary_of() { # the Patroni node that is primary now
    for name in pg1 pg2 pg3; do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${api_port[$name]}/primary")" = 200 ] && { echo "$name"; return 0; }
    done
    return 1
}
has_sync_standby() {
    for name in pg1 pg2 pg3; do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${api_port[$name]}/sync")" = 200 ] && return 0
    done
    return 1
}
wait_for 120 "a Patroni primary" primary_of
wait_for 120 "a synchronous standby" has_sync_standby
echo "PostgreSQL: primary $(primary_of), synchronous standby there"

# Two zhifu nodes on every PostgreSQL node's address, HAProxy in front.
store="postgresql://zhifu:change-me-zhifu@127.0.0.1:${pg_port[pg1]},127.0.0.1:${pg_port[pg2]},127.0.0.1:${pg_port[pg3]}/zhifu?target_session_attrs=read-write"
admin_key=recipe-admin-key
declare -A zhifu_port zhifu_pid
start_zhifu() {
    "$zhifu" serve --listen "127.0.0.1:${zhifu_port[$1]}" --data-dir "$work/$1" --store "$store" \
        --admin-key "$admin_key" --store-lease-ms 5000 >>"$work/$1.log" 2>&1 &
    zhifu_pid[$1]=$!
    pids+=($!)
}
for name in zhifu1 zhifu2; do zhifu_port[$name]=$(port); start_zhifu "$name"; done
front=$(port)
sed -e "s|@BIND@|127.0.0.1|g" -e "s|@ZHIFU_PORT@|$front|g" \
    -e "s|@ZHIFU_1@|127.0.0.1:${zhifu_port[zhifu1]}|g" -e "s|@ZHIFU_2@|127.0.0.1:${zhifu_port[zhifu2]}|g" \
    -e "s|@PG_PORT@|$(port)|g" -e "s|@PG_1@|127.0.0.1:${pg_port[pg1]}|g" -e "s|@PG_2@|127.0.0.1:${pg_port[pg2]}|g" \
    -e "s|@PG_3@|127.0.0.1:${pg_port[pg3]}|g" -e "s|@API_1@|${api_port[pg1]}|g" -e "s|@API_2@|${api_port[pg2]}|g" \
    -e "s|@API_3@|${api_port[pg3]}|g" "$recipe/haproxy.cfg" >"$work/haproxy.cfg"
haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 &
pids+=($!)
api="http://127.0.0.1:$front"
wait_for 60 "a zhifu leader behind HAProxy" curl -sf "$api/readyz"
# HAProxy starts with every server up until its checks say otherwise: a
# request meanwhile may reach the follower (503 not_leader, nothing done).
sleep 3

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
user() { curl -sf -X POST "$api/v1/users" -H "Authorization: Bearer $admin_key" -d "{\"name\":\"$1\"}"; }
payer=$(user payer); payee=$(user payee)
payer_key=$(echo "$payer" | json "['api_key']"); payee_id=$(echo "$payee" | json "['id']"); payee_key=$(echo "$payee" | json "['api_key']")
# The leader sees PostgreSQL's synchronous standby (its role reads
# pg_stat_replication through pg_monitor, granted by post-bootstrap.sh).
leader_sees_sync_standby() { curl -sf "$api/healthz" | json ".get('replicas', [])" | grep -q "'sync_state': 'sync'"; }
wait_for 30 "the leader reporting a synchronous standby" leader_sees_sync_standby
curl -sf -X POST "$api/v1/topups" -H "Authorization: Bearer $payer_key" -d '{"amount":100000000,"bank":"ICBC"}' >/dev/null

# The client: transfers of 1 fen, each under its own key, retried until answered 201.
acked="$work/acked"
: >"$acked"
(
    n=0
    while [ ! -e "$work/stop" ]; do
        key="k-$n"
        until [ "$(curl -s -o /dev/null -m 5 -w '%{http_code}' -X POST "$api/v1/transfers" \
            -H "Authorization: Bearer $payer_key" -H "Idempotency-Key: $key" \
            -d "{\"to\":\"$payee_id\",\"amount\":1}")" = 201 ]; do
            sleep 0.2
        done
        echo "$key" >>"$acked"
        n=$((n + 1))
    done
) &
client=$!
sleep 3

# The PostgreSQL primary's machine dies: Patroni and PostgreSQL, kill -9.
old=$(primary_of)
started=$(date +%s)
pkill -9 -f "patroni $work/$old.yml" || true
pkill -9 -f "postgres -D $work/$old" || true
pkill -9 -f "$work/$old" || true
wait_for 90 "a new PostgreSQL primary" bash -c "$(declare -f primary_of); $(declare -p api_port); n=\$(primary_of) && [ \"\$n\" != $old ]"
wait_for 60 "zhifu writing again" curl -sf "$api/readyz"
echo "PostgreSQL failover: $(primary_of) leads after $(( $(date +%s) - started )) s"
count_before=$(wc -l <"$acked")
wait_for 60 "payments acknowledged after the failover" bash -c "[ \$(wc -l <$acked) -gt $((count_before + 5)) ]"

# The zhifu leader dies: HAProxy finds the new one.
for name in zhifu1 zhifu2; do
    if curl -sf "http://127.0.0.1:${zhifu_port[$name]}/readyz" >/dev/null; then leader=$name; fi
done
started=$(date +%s)
kill -9 "${zhifu_pid[$leader]}"
wait_for 60 "a new zhifu leader behind HAProxy" curl -sf "$api/readyz"
echo "zhifu failover: the other node leads after $(( $(date +%s) - started )) s"
count_before=$(wc -l <"$acked")
wait_for 60 "payments acknowledged after the zhifu failover" bash -c "[ \$(wc -l <$acked) -gt $((count_before + 5)) ]"

touch "$work/stop"
wait "$client"
acknowledged=$(wc -l <"$acked")
received=$(curl -sf "$api/v1/balance" -H "Authorization: Bearer $payee_key" | json "['available']")
check=$(curl -sf "$api/v1/admin/ledger/check" -H "Authorization: Bearer $admin_key" | json "['balanced']")
[ "$acknowledged" -gt 10 ] || fail "only $acknowledged payments were acknowledged"
[ "$received" = "$acknowledged" ] || fail "$acknowledged payments acknowledged, $received fen received"
[ "$check" = "True" ] || fail "the ledger check is not balanced"
echo "PASS: $acknowledged payments acknowledged, each received exactly once, the ledger balanced"
