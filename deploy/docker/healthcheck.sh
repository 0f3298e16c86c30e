#!/bin/bash
# The image's HEALTHCHECK: GET /health on the role's HTTP port with bash's
# /dev/tcp, so the runtime image needs no curl. Healthy on `200`.
set -u
port="${CHATSTREAM_HTTP_PORT:-8000}"
exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
printf 'GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
IFS= read -r -t 2 status <&3 || exit 1
exec 3>&-
case "$status" in
    "HTTP/1."?" 200 "*) exit 0 ;;
    *) exit 1 ;;
esac
