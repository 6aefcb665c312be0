#!/bin/bash
# llmgw-healthcheck [live|ready] - the container image's HEALTHCHECK.
#
# The image has no curl: this uses bash's /dev/tcp, so it adds nothing to the
# image and works for both roles.
#
#   data plane     on its ops listener (--ops-listen), which answers while the
#                  client port is saturated:
#                  live:  GET /healthz must answer 200 (the process serves)
#                  ready: GET /readyz must answer 200 (a snapshot is applied and
#                         no shutdown has begun; 503 while draining)
#   control plane  a TCP connection to its port must succeed (it has no HTTP
#                  health endpoint, and it may serve TLS on that port)
#
# The role comes from LLMGW_ROLE (controlplane|dataplane) if set, else from the
# container's command line (/proc/1/cmdline, which also works behind an init
# such as `docker run --init`). The address is the command line's --ops-listen
# (data plane) or --listen (control plane), else LLMGW_OPS_LISTEN /
# LLMGW_CONTROLPLANE_LISTEN, else the binaries' defaults; a wildcard host is
# checked on loopback.
# Exit status: 0 healthy, 1 not.
set -uo pipefail

mode=${1:-live}
case "$mode" in
    live | ready) ;;
    *)
        echo "usage: llmgw-healthcheck [live|ready]" >&2
        exit 1
        ;;
esac

role=${LLMGW_ROLE:-}
listen=""
ops_listen=""
if [[ -r /proc/1/cmdline ]]; then
    mapfile -d '' -t argv </proc/1/cmdline || argv=()
    for ((i = 0; i < ${#argv[@]}; i++)); do
        arg=${argv[i]}
        if [[ -z "${LLMGW_ROLE:-}" ]]; then
            case "${arg##*/}" in
                llmgw-controlplane) role=controlplane ;;
                llmgw-dataplane) role=dataplane ;;
            esac
        fi
        case "$arg" in
            --listen=*) listen=${arg#--listen=} ;;
            --listen) listen=${argv[i + 1]:-} ;;
            --ops-listen=*) ops_listen=${arg#--ops-listen=} ;;
            --ops-listen) ops_listen=${argv[i + 1]:-} ;;
        esac
    done
fi

case "$role" in
    # The data plane's probes go to its ops listener, which answers while
    # the client port is saturated.
    dataplane) listen=${ops_listen:-${LLMGW_OPS_LISTEN:-127.0.0.1:9091}} ;;
    controlplane) listen=${listen:-${LLMGW_CONTROLPLANE_LISTEN:-127.0.0.1:9090}} ;;
    *)
        echo "llmgw-healthcheck: cannot tell the role (run llmgw-controlplane or llmgw-dataplane, or set LLMGW_ROLE)" >&2
        exit 1
        ;;
esac

port=${listen##*:}
host=${listen%:*}
host=${host#[}
host=${host%]}
case "$host" in
    "" | 0.0.0.0) host=127.0.0.1 ;;
    "::") host=::1 ;;
esac
if [[ ! "$port" =~ ^[0-9]+$ ]]; then
    echo "llmgw-healthcheck: cannot read a port from '$listen'" >&2
    exit 1
fi

if ! { exec 3<>"/dev/tcp/$host/$port"; } 2>/dev/null; then
    echo "llmgw-healthcheck: $role: nothing accepts connections on $host:$port" >&2
    exit 1
fi

if [[ "$role" == controlplane ]]; then
    exec 3>&-
    echo "control plane accepts connections on $host:$port"
    exit 0
fi

path=/healthz
[[ "$mode" == ready ]] && path=/readyz
printf 'GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n' "$path" "$host" >&3
status=""
IFS= read -r -t 5 status <&3 || true
exec 3>&-
status=${status%$'\r'}
if [[ "$status" =~ ^HTTP/[0-9.]+\ 200([^0-9]|$) ]]; then
    echo "data plane $path: $status"
    exit 0
fi
echo "llmgw-healthcheck: data plane $path on $host:$port answered '${status:-nothing}'" >&2
exit 1
