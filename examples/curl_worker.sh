#!/usr/bin/env bash
# A Prack worker with nothing but bash, curl, sed and base64. Usage: curl_worker.sh [API URL]
# GET / greets, /echo sends the request's body back untouched (base64 in, base64 out), others 404.
api=${1:-${PRACK_API:-http://127.0.0.1:4242}}; api=${api%/}/api/v1; export no_proxy='*'
job=$(mktemp) && trap 'rm -f "$job"' EXIT || exit 1
trap 'kill $pid 2>/dev/null; exit 0' TERM INT    # stops an idle poll or backoff at once
field() { sed -n "1{s/$1//;s/$2//p;}" "$job"; }   # from {"identifier":"...",...,"body":"..."}
pid= delay=0 up=
while :; do
  curl -s -w '\n%{http_code}' "$api/request" >"$job" & pid=$!; wait $pid; pid=
  status=$(tail -n 1 "$job")
  case $status in
    200|404) [ "$up" ] || echo "curl worker: connected to $api" >&2; up=1 delay=0 ;;
    *) up= delay=$((delay ? (delay < 4 ? delay * 2 : 4) : 1))   # down, or 503 while stopping
       echo "curl worker: cannot reach $api; retrying in ${delay}s" >&2
       sleep $delay & pid=$!; wait $pid; pid=; continue ;;
  esac
  [ "$status" = 200 ] || continue                       # 404: nothing pending, ask again
  id=$(field '^{"identifier":"' '".*')
  path=$(field '^.*"PATH_INFO":"' '".*')
  body=$(field '^.*"body":"' '"}$')
  case $path in
    /) code=200 type="text/plain; charset=utf-8" body=$(printf 'Hello from curl ✓\n' | base64 | tr -d '\n') ;;
    /echo) code=200 type=application/octet-stream ;;
    *) code=404 type="text/plain; charset=utf-8" body=$(printf 'Not found: %s\n' "$path" | base64 | tr -d '\n') ;;
  esac
  printf '{"identifier":"%s","code":%d,"headers":{"Content-Type":"%s"},"body":"%s"}' \
         "$id" "$code" "$type" "$body" |
    curl -sf -H 'Content-Type: application/json' --data-binary @- "$api/response" >/dev/null ||
    echo "curl worker: the answer to $id was refused" >&2
done
