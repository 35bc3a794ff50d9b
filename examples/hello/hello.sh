#!/bin/sh
if [ "$1" = "--self-test" ]; then
    echo "self-test passed at build time"
    exit 0
fi
echo "$GREETING"
echo "kernel: $(uname -sr), hostname: $(hostname), pid: $$"
cat /srv/self-test.txt
