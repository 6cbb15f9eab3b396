# Shared by the curl examples: base URL and optional API key.
BASE_URL="${BASE_URL:-http://127.0.0.1:8007}"
AUTH=()
if [ -n "${RAFALE_API_KEY:-}" ]; then AUTH=(-H "Authorization: Bearer $RAFALE_API_KEY"); fi
json_str() { python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"; }
