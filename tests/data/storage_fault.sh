# Run `zpd start` with its state directory on a small tmpfs, inside a private mount namespace:
#   unshare -m --propagation private bash storage_fault.sh SRC_STATE MNT SIZE MODE OUT_DIR [--set k=v ...]
# MODE: ro (remounted read-only) or full:KB (filled up to KB kibibytes free). Results go to OUT_DIR:
# rc.txt, stdout.txt, stderr.txt, status.json, status_rc.txt, verify.json (verify_round per committed round).
set -u
PY=${PYTHON:-python}
SRC=$1; MNT=$2; SIZE=$3; MODE=$4; OUT=$5; shift 5
mkdir -p $MNT
mount -t tmpfs -o size=$SIZE tmpfs $MNT
cp -a $SRC $MNT/state
if [ "$MODE" = ro ]; then mount -o remount,ro $MNT; fi
if [ "${MODE%%:*}" = full ]; then LEAVE=${MODE#full:}; AV=$(df -k --output=avail $MNT | tail -1); dd if=/dev/zero of=$MNT/filler bs=1k count=$((AV-LEAVE)) 2>/dev/null; fi
df -k $MNT | tail -1 > $OUT/df.txt
$PY -m zpd.loop.cli start --config configs/smoke.toml --state-dir $MNT/state --rounds 3 "$@" > $OUT/stdout.txt 2> $OUT/stderr.txt
echo $? > $OUT/rc.txt
$PY -m zpd.loop.cli status --state-dir $MNT/state --json > $OUT/status.json 2> $OUT/status.err; echo $? > $OUT/status_rc.txt
$PY -c "
import sys, json; from pathlib import Path
from zpd.store.rounds import committed_on_disk, round_dir, verify_round
s=Path(sys.argv[1]); print(json.dumps({r: verify_round(round_dir(s, r)) for r in committed_on_disk(s)}))" $MNT/state > $OUT/verify.json
umount $MNT
