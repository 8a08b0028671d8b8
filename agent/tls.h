/* TLS for the agent: mbedTLS over memory buffers, for an event loop.
 *
 * No I/O here. The connection layer (conn.c) receives ciphertext straight
 * into tls_in_buf, pulls plaintext out with tls_read (which also drives the
 * handshake), pushes plaintext in with tls_write, and takes the ciphertext
 * that all of these produced with tls_out_take, to hand it to uv_write.
 * mbedTLS's BIO callbacks only move bytes between those buffers, so its
 * WANT_READ means "not yet: wait for the socket", never failure.
 *
 * TLS 1.2 at least, with ECDHE and AES-GCM or ChaCha20-Poly1305 only. */
#ifndef RMEM_TLS_H
#define RMEM_TLS_H

#include <stddef.h>
#include <sys/types.h>

typedef struct tls_config tls_config;
typedef struct tls_conn tls_conn;

/* The agent's certificate (chain) and key, and with `client_ca_file` the CA
 * that client certificates must come from (then required: mutual TLS). All
 * PEM files. Returns 0, or RMEM_ETLS with the reason in `err`. */
int tls_config_new(tls_config **out, const char *cert_file, const char *key_file,
                   const char *client_ca_file, char *err, size_t errlen);
/* Accepts NULL. Free it only after every tls_conn made from it. */
void tls_config_free(tls_config *cfg);

/* A server-side TLS session for one connection. Returns 0 or RMEM_ENOMEM. */
int tls_conn_new(tls_conn **out, tls_config *cfg);
/* Accepts NULL. */
void tls_conn_free(tls_conn *t);

/* Where the next received ciphertext may go, at least 16 KiB. */
void tls_in_buf(tls_conn *t, char **p, size_t *n);
/* `n` bytes were put there. */
void tls_in_commit(tls_conn *t, size_t n);
/* Runs the handshake as far as the input allows, then decrypts into
 * dst[0..cap). Returns the plaintext bytes, 0 when nothing more can happen
 * until more ciphertext arrives, RMEM_ECLOSED when the peer sent
 * close_notify, or RMEM_ETLS (reason in tls_error) when the session failed.
 * Call until it returns 0 or less. Output (handshake messages, alerts) may be
 * waiting afterwards, even after a failure. */
ssize_t tls_read(tls_conn *t, char *dst, size_t cap);
/* Encrypts all of p[0..n) into records of up to 16 KiB. The handshake must be
 * done. Returns 0, RMEM_ENOMEM or RMEM_ETLS. */
int tls_write(tls_conn *t, const char *p, size_t n);
/* The ciphertext waiting to be sent, or NULL when there is none. The caller
 * owns it (free()). */
char *tls_out_take(tls_conn *t, size_t *len);

int tls_handshake_done(const tls_conn *t);
/* 1 when the client presented a certificate that the agent verified. */
int tls_peer_verified(const tls_conn *t);
/* The verified client certificate's subject, for logs ("" when none). */
void tls_peer_subject(const tls_conn *t, char *out, size_t n);
/* The negotiated suite, for logs. */
const char *tls_suite(const tls_conn *t);
/* Why the session failed. */
const char *tls_error(const tls_conn *t);

/* 1 when `first` (the first byte a client sent) starts a TLS handshake record. */
int tls_is_handshake_byte(unsigned char first);

#endif
