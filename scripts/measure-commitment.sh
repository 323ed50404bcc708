#!/bin/sh
# Issue 17 measurements (docs/commitment.md): bytes shipped, segment vs full verification
# cost, store overhead, at N = 128 and 1024 generated tokens on the embedded model.
B=${B:-target/release/verillm-tui}
W=${1:-/tmp/measure17}
rm -rf "$W"; mkdir -p "$W"
head -c 32 /dev/urandom > "$W/secret"
for N in 128 1024; do
  $B request --prompt "Write a long story about a lighthouse keeper." --min-tokens $N --max-tokens $N --out "$W/req$N.json" 2>/dev/null
  $B infer --request "$W/req$N.json" --out "$W/plain$N" --no-store >/dev/null 2>&1
  $B infer --request "$W/req$N.json" --out "$W/b$N" >/dev/null 2>&1
  python3 -c "import json;a=json.load(open('$W/plain$N/manifest.json'))['timings'];b=json.load(open('$W/b$N/manifest.json'))['timings'];print('N=$N tok/s without store %.2f, with store %.2f (ratio %.3f)' % (a['tokens_per_s'], b['tokens_per_s'], b['tokens_per_s']/a['tokens_per_s']))"
  for C in 1 2 4; do
    $B challenge "$W/b$N" --secret-file "$W/secret" --layers $C --out "$W/ch$N-$C.json" >/dev/null
    $B open "$W/b$N" --challenge "$W/ch$N-$C.json" --out "$W/op$N-$C"
    $B verify "$W/b$N" --request "$W/req$N.json" --opening "$W/op$N-$C" --json 2>/dev/null > "$W/seg$N-$C.json" || true
    python3 -c "import json,sys;v=json.load(open('$W/seg$N-$C.json'));print('N=$N c=$C', v['verdict'], 'bytes', v['bytes_received'], 'layers', [(s['layer'], round(s['recompute_s'],4)) for s in v['segments']], 'total_s', round(v['time_s'],3))"
  done
  $B verify "$W/b$N" --request "$W/req$N.json" --verifiers 1 --json 2>/dev/null > "$W/full$N.json" || true
  python3 -c "import json;v=json.load(open('$W/full$N.json'));x=v['verifiers'][0];print('N=$N full verify', v['summary']['final_verdict'], 'time_s', x.get('time_s', x.get('overhead')))"
  echo "N=$N manifest (root-only bundle) $(stat -c %s $W/b$N/manifest.json) B; every:8 states $(stat -c %s $W/b$N/hidden_states.safetensors) B; store (all columns) $(du -sb $W/b$N/states | cut -f1) B"
done
