#!/usr/bin/env bash
# Makes a development CA and, signed by it, a server certificate for rmemd and
# a client certificate for mutual TLS, all ECDSA P-256, with the openssl CLI.
#
#   deploy/make-certs.sh DIR [HOST...]
#
# DIR gets ca.crt ca.key server.crt server.key client.crt client.key and
# server.pin. The server certificate is valid for 127.0.0.1 and localhost,
# plus every HOST given (an IP address or a DNS name). The last line printed
# is the server certificate's SHA-256 pin, for `rmem --pin`.
#
# For development and test rigs: keep ca.key away from the agents' machines.
set -euo pipefail

if [ $# -lt 1 ] || [ "${1:0:1}" = "-" ]; then
  echo "usage: $0 DIR [HOST...]" >&2
  exit 2
fi
dir=$1
shift
command -v openssl >/dev/null || { echo "make-certs: openssl is not installed" >&2; exit 1; }

san="IP:127.0.0.1,DNS:localhost"
for h in "$@"; do
  if [[ $h =~ ^[0-9.]+$ || $h == *:* ]]; then san+=",IP:$h"; else san+=",DNS:$h"; fi
done

mkdir -p "$dir"
cd "$dir"
umask 077 # Keys readable by their owner only.

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
serial() { echo "0x$(openssl rand -hex 16)"; }

# sign NAME SUBJECT EXTENSIONS: a certificate for NAME.key, issued by the CA.
sign() {
  key "$1.key"
  openssl req -new -key "$1.key" -subj "$2" -out "$1.csr" 2>/dev/null
  printf '%s\n' "$3" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -set_serial "$(serial)" -days 825 \
    -sha256 -extfile "$1.ext" -out "$1.crt" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

key ca.key
openssl req -x509 -new -key ca.key -sha256 -days 3650 -set_serial "$(serial)" \
  -subj "/CN=rmem development CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out ca.crt 2>/dev/null

sign server "/CN=rmemd" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=$san"

sign client "/CN=rmem client" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"

chmod 644 ca.crt server.crt client.crt
# The pin is the SHA-256 of the DER certificate, as rmem --pin takes it.
pin=$(openssl x509 -in server.crt -noout -fingerprint -sha256 | cut -d= -f2)
echo "$pin" >server.pin
chmod 644 server.pin

echo "make-certs: CA, server ($san) and client certificates in $(pwd)" >&2
echo "$pin"
