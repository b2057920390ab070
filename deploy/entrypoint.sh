#!/bin/sh
# The container's entrypoint: `voicestack serve`, under Litestream when a replica is configured.
#
#   LITESTREAM_REPLICA_URL  unset: plain `voicestack serve "$@"`.
#                           set (s3://bucket/path, file:///backup/voicestack, ...): restore the
#                           database from the replica if the volume has none, create it if there
#                           was no backup either, then run the server as Litestream's child with
#                           --no-autocheckpoint (Litestream owns checkpoints); Litestream
#                           replicates every commit and syncs the last ones when the server exits.
#   LITESTREAM_CONFIG       the Litestream config [default: /etc/litestream.yml, a copy of
#                           deploy/litestream.yml that reads VOICESTACK_DB and the URL above].
#   VOICESTACK_DB, VOICESTACK_HOST, VOICESTACK_PORT, ...: voicestack's own settings.
#
# VOICESTACK_DRY_RUN=1 prints each command (one word a line, then `--`) instead of running it.
set -eu

run() {
    if [ -n "${VOICESTACK_DRY_RUN:-}" ]; then
        printf '%s\n' "$@" --
    else
        "$@"
    fi
}

if [ -z "${LITESTREAM_REPLICA_URL:-}" ]; then
    set -- voicestack serve "$@"
else
    : "${VOICESTACK_DB:?VOICESTACK_DB must name the database Litestream replicates}"
    export VOICESTACK_DB LITESTREAM_REPLICA_URL
    config="${LITESTREAM_CONFIG:-/etc/litestream.yml}"
    serve="voicestack serve --no-autocheckpoint"
    for arg in "$@"; do
        case "$arg" in
            *[!A-Za-z0-9_./:=@%+,-]*)
                echo "entrypoint: cannot pass this argument through Litestream's -exec: $arg" >&2
                exit 2 ;;
        esac
        serve="$serve $arg"
    done
    run litestream restore -config "$config" -if-db-not-exists -if-replica-exists "$VOICESTACK_DB"
    # No backup either: create the database now (WAL mode, the first core migrations). Litestream
    # notices a database created after it started only on its next poll, so commits made before
    # that would not be replicated if the server stopped at once.
    if [ -n "${VOICESTACK_DRY_RUN:-}" ] || [ ! -e "$VOICESTACK_DB" ]; then
        run python3 -c "import sys; from voicestack.store import Store; Store(sys.argv[1]).close()" \
            "$VOICESTACK_DB"
    fi
    set -- litestream replicate -config "$config" -exec "$serve"
fi

if [ -n "${VOICESTACK_DRY_RUN:-}" ]; then
    run "$@"
    exit 0
fi
exec "$@"
