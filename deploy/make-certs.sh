#!/bin/sh
# Test-grade PKI for deploy/compose.yaml: a CA, a Kafka broker certificate and a
# PostgreSQL server certificate, in deploy/certs/. Use your own CA in production.
set -eu
cd "$(dirname "$0")"
mkdir -p certs && cd certs
openssl req -x509 -newkey rsa:3072 -nodes -days 825 -subj "/CN=retail CA" \
  -keyout ca.key -out ca.pem
for name in kafka postgres; do
  openssl req -newkey rsa:3072 -nodes -subj "/CN=$name" -keyout "$name.key" -out "$name.csr"
  printf 'subjectAltName=DNS:%s,DNS:localhost\nextendedKeyUsage=serverAuth\n' "$name" > "$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
    -extfile "$name.ext" -out "$name.pem"
done
# Kafka reads a PEM "keystore": the private key (PKCS#8) followed by the chain
openssl pkcs8 -topk8 -nocrypt -in kafka.key -out kafka.pk8
cat kafka.pk8 kafka.pem ca.pem > kafka-keystore.pem
# PostgreSQL refuses a key others can read; uid 999 is postgres in the official image
chmod 600 postgres.key kafka-keystore.pem ca.key
echo "certs in $(pwd); for PostgreSQL: sudo chown 999:999 postgres.key postgres.pem"
