/* TLS sessions over memory buffers (see tls.h). Input: libuv reads into
 * `in`, and the recv callback hands mbedTLS what it asks for from there.
 * Output: the send callback appends each record to `out`, which tls_write
 * sizes for the whole reply first, so that one buffer goes to uv_write with
 * no copy beyond mbedTLS's own record buffer. */
#include "tls.h"

#include "rmem_error.h"

#include <limits.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Forward secrecy and AEAD only, in the agent's order of preference.
 * ChaCha20-Poly1305 first: mbedTLS 2.28's GCM hashes one 16-byte block per
 * call, so even with AES-NI it is no faster (tests/bench/tls_cipher_bench
 * measures both). librmem offers the same list. */
static const int tls__suites[] = {
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    0,
};

/* Ciphertext read per libuv callback at most: four full records. */
#define TLS_IN_CAP (68u << 10)
#define TLS_IN_MIN (17u << 10)

struct tls_config {
  mbedtls_ssl_config conf;
  mbedtls_x509_crt cert, ca;
  mbedtls_pk_context key;
  mbedtls_entropy_context entropy;
  mbedtls_ctr_drbg_context drbg;
};

struct tls_conn {
  mbedtls_ssl_context ssl;
  int handshake_done;
  char *out; /* Ciphertext not yet taken. */
  size_t out_len, out_cap;
  size_t in_off, in_len; /* in[in_off..in_len) is not yet consumed. */
  char err[256];
  char in[TLS_IN_CAP];
};

static void tls__strerror(int rc, char *out, size_t n) {
  mbedtls_strerror(rc, out, n);
}

int tls_config_new(tls_config **out, const char *cert_file, const char *key_file,
                   const char *client_ca_file, char *err, size_t errlen) {
  *out = NULL;
  tls_config *cfg = calloc(1, sizeof(*cfg));
  if (cfg == NULL) {
    snprintf(err, errlen, "out of memory");
    return RMEM_ENOMEM;
  }
  mbedtls_ssl_config_init(&cfg->conf);
  mbedtls_x509_crt_init(&cfg->cert);
  mbedtls_x509_crt_init(&cfg->ca);
  mbedtls_pk_init(&cfg->key);
  mbedtls_entropy_init(&cfg->entropy);
  mbedtls_ctr_drbg_init(&cfg->drbg);

  const char *what = "random generator";
  int rc = mbedtls_ctr_drbg_seed(&cfg->drbg, mbedtls_entropy_func, &cfg->entropy,
                                 (const unsigned char *)"rmemd", 5);
  if (rc == 0) {
    what = cert_file;
    rc = mbedtls_x509_crt_parse_file(&cfg->cert, cert_file);
  }
  if (rc == 0) {
    what = key_file;
    rc = mbedtls_pk_parse_keyfile(&cfg->key, key_file, NULL);
  }
  if (rc == 0) {
    what = "certificate and key do not match";
    rc = mbedtls_pk_check_pair(&cfg->cert.pk, &cfg->key);
  }
  if (rc == 0 && client_ca_file) {
    what = client_ca_file;
    rc = mbedtls_x509_crt_parse_file(&cfg->ca, client_ca_file);
  }
  if (rc == 0) {
    what = "TLS configuration";
    rc = mbedtls_ssl_config_defaults(&cfg->conf, MBEDTLS_SSL_IS_SERVER,
                                     MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT);
  }
  if (rc == 0)
    rc = mbedtls_ssl_conf_own_cert(&cfg->conf, &cfg->cert, &cfg->key);
  if (rc != 0) {
    char why[160];
    /* parse_file returns a positive count of certificates it could not parse. */
    if (rc > 0)
      snprintf(why, sizeof(why), "%d certificates could not be parsed", rc);
    else
      tls__strerror(rc, why, sizeof(why));
    if (strcmp(what, "certificate and key do not match") == 0)
      snprintf(err, errlen, "%s", what);
    else
      snprintf(err, errlen, "%s: %s", what, why);
    tls_config_free(cfg);
    return RMEM_ETLS;
  }
  mbedtls_ssl_conf_rng(&cfg->conf, mbedtls_ctr_drbg_random, &cfg->drbg);
  mbedtls_ssl_conf_min_version(&cfg->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
                               MBEDTLS_SSL_MINOR_VERSION_3);
  mbedtls_ssl_conf_ciphersuites(&cfg->conf, tls__suites);
  mbedtls_ssl_conf_renegotiation(&cfg->conf, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
  if (client_ca_file) {
    mbedtls_ssl_conf_ca_chain(&cfg->conf, &cfg->ca, NULL);
    mbedtls_ssl_conf_authmode(&cfg->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
  } else {
    mbedtls_ssl_conf_authmode(&cfg->conf, MBEDTLS_SSL_VERIFY_NONE);
  }
  *out = cfg;
  return 0;
}

void tls_config_free(tls_config *cfg) {
  if (cfg == NULL)
    return;
  mbedtls_ssl_config_free(&cfg->conf);
  mbedtls_x509_crt_free(&cfg->cert);
  mbedtls_x509_crt_free(&cfg->ca);
  mbedtls_pk_free(&cfg->key);
  mbedtls_ctr_drbg_free(&cfg->drbg);
  mbedtls_entropy_free(&cfg->entropy);
  free(cfg);
}

/* Makes room for `more` bytes of output. */
static int tls__out_reserve(tls_conn *t, size_t more) {
  if (t->out_cap - t->out_len >= more)
    return 0;
  size_t cap = t->out_cap * 2;
  if (cap < t->out_len + more)
    cap = t->out_len + more;
  if (cap < 4096)
    cap = 4096;
  char *p = realloc(t->out, cap);
  if (p == NULL)
    return -1;
  t->out = p;
  t->out_cap = cap;
  return 0;
}

/* mbedTLS's BIO: records go to `out`, which always has room. */
static int tls__send(void *ctx, const unsigned char *buf, size_t len) {
  tls_conn *t = ctx;
  if (len > INT_MAX)
    len = INT_MAX;
  if (tls__out_reserve(t, len) != 0)
    return MBEDTLS_ERR_SSL_ALLOC_FAILED;
  memcpy(t->out + t->out_len, buf, len);
  t->out_len += len;
  return (int)len;
}

/* mbedTLS's BIO: bytes come from `in`; none left means "not yet". */
static int tls__recv(void *ctx, unsigned char *buf, size_t len) {
  tls_conn *t = ctx;
  size_t avail = t->in_len - t->in_off;
  if (avail == 0)
    return MBEDTLS_ERR_SSL_WANT_READ;
  size_t n = len < avail ? len : avail;
  if (n > INT_MAX)
    n = INT_MAX;
  memcpy(buf, t->in + t->in_off, n);
  t->in_off += n;
  return (int)n;
}

int tls_conn_new(tls_conn **out, tls_config *cfg) {
  *out = NULL;
  tls_conn *t = malloc(sizeof(*t));
  if (t == NULL)
    return RMEM_ENOMEM;
  memset(t, 0, offsetof(tls_conn, in));
  mbedtls_ssl_init(&t->ssl);
  if (mbedtls_ssl_setup(&t->ssl, &cfg->conf) != 0) {
    tls_conn_free(t);
    return RMEM_ENOMEM;
  }
  mbedtls_ssl_set_bio(&t->ssl, t, tls__send, tls__recv, NULL);
  *out = t;
  return 0;
}

void tls_conn_free(tls_conn *t) {
  if (t == NULL)
    return;
  mbedtls_ssl_free(&t->ssl);
  free(t->out);
  free(t);
}

void tls_in_buf(tls_conn *t, char **p, size_t *n) {
  if (t->in_off == t->in_len) {
    t->in_off = t->in_len = 0;
  } else if (TLS_IN_CAP - t->in_len < TLS_IN_MIN && t->in_off > 0) {
    memmove(t->in, t->in + t->in_off, t->in_len - t->in_off);
    t->in_len -= t->in_off;
    t->in_off = 0;
  }
  *p = t->in + t->in_len;
  *n = TLS_IN_CAP - t->in_len;
}

void tls_in_commit(tls_conn *t, size_t n) {
  t->in_len += n;
}

static const char *tls__alert_name(unsigned char a) {
  switch (a) {
  case MBEDTLS_SSL_ALERT_MSG_UNEXPECTED_MESSAGE:
    return "unexpected message";
  case MBEDTLS_SSL_ALERT_MSG_BAD_RECORD_MAC:
    return "bad record MAC";
  case MBEDTLS_SSL_ALERT_MSG_HANDSHAKE_FAILURE:
    return "handshake failure";
  case MBEDTLS_SSL_ALERT_MSG_BAD_CERT:
    return "bad certificate";
  case MBEDTLS_SSL_ALERT_MSG_CERT_UNKNOWN:
    return "certificate unknown";
  case MBEDTLS_SSL_ALERT_MSG_CERT_EXPIRED:
    return "certificate expired";
  case MBEDTLS_SSL_ALERT_MSG_UNKNOWN_CA:
    return "unknown CA";
  case MBEDTLS_SSL_ALERT_MSG_DECODE_ERROR:
    return "decode error";
  case MBEDTLS_SSL_ALERT_MSG_DECRYPT_ERROR:
    return "decrypt error";
  case MBEDTLS_SSL_ALERT_MSG_PROTOCOL_VERSION:
    return "protocol version";
  case MBEDTLS_SSL_ALERT_MSG_INSUFFICIENT_SECURITY:
    return "insufficient security";
  case MBEDTLS_SSL_ALERT_MSG_INTERNAL_ERROR:
    return "internal error";
  }
  return "other";
}

/* Records why the session failed; returns RMEM_ETLS. */
static int tls__fail(tls_conn *t, int rc) {
  char why[160];
  tls__strerror(rc, why, sizeof(why));
  uint32_t flags = mbedtls_ssl_get_verify_result(&t->ssl);
  if (rc == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED && flags != 0 && flags != (uint32_t)-1) {
    char info[160];
    int n = mbedtls_x509_crt_verify_info(info, sizeof(info), "", flags);
    /* One line: the info ends with a newline per reason. */
    for (int i = 0; i < n && info[i]; i++)
      if (info[i] == '\n')
        info[i] = i + 1 < n && info[i + 1] ? ';' : '\0';
    snprintf(t->err, sizeof(t->err), "client certificate rejected: %s", info);
  } else if (rc == MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE && t->ssl.in_msg) {
    /* The client gave up; its alert says why (it distrusts our certificate,
     * or has none of our suites). */
    snprintf(t->err, sizeof(t->err), "the client sent a fatal alert: %s",
             tls__alert_name(t->ssl.in_msg[1]));
  } else {
    snprintf(t->err, sizeof(t->err), "%s", why);
  }
  /* mbedTLS sends no alert for a missing certificate: tell the client why. */
  if (rc == MBEDTLS_ERR_SSL_NO_CLIENT_CERTIFICATE)
    mbedtls_ssl_send_alert_message(&t->ssl, MBEDTLS_SSL_ALERT_LEVEL_FATAL,
                                   MBEDTLS_SSL_ALERT_MSG_HANDSHAKE_FAILURE);
  return RMEM_ETLS;
}

ssize_t tls_read(tls_conn *t, char *dst, size_t cap) {
  for (;;) {
    int rc;
    if (!t->handshake_done) {
      rc = mbedtls_ssl_handshake(&t->ssl);
      if (rc == 0) {
        t->handshake_done = 1;
        continue;
      }
    } else {
      rc = mbedtls_ssl_read(&t->ssl, (unsigned char *)dst, cap < INT_MAX ? cap : INT_MAX);
      if (rc > 0)
        return rc;
    }
    if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE) {
      /* mbedTLS also says WANT_READ after a record that carried no data for
       * us (a refused renegotiation): go on while input is left. */
      if (t->in_off < t->in_len)
        continue;
      return 0;
    }
    if (rc == 0 || rc == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY)
      return RMEM_ECLOSED;
    if (rc == MBEDTLS_ERR_SSL_ALLOC_FAILED) {
      snprintf(t->err, sizeof(t->err), "out of memory");
      return RMEM_ENOMEM;
    }
    return tls__fail(t, rc);
  }
}

int tls_write(tls_conn *t, const char *p, size_t n) {
  if (!t->handshake_done) {
    snprintf(t->err, sizeof(t->err), "write before the handshake");
    return RMEM_ETLS;
  }
  /* Room for every record at once: the reply leaves in one buffer. */
  int maxp = mbedtls_ssl_get_max_out_record_payload(&t->ssl);
  int exp = mbedtls_ssl_get_record_expansion(&t->ssl);
  if (maxp <= 0 || exp < 0) {
    snprintf(t->err, sizeof(t->err), "cannot size records");
    return RMEM_ETLS;
  }
  size_t records = n / (size_t)maxp + 1;
  if (tls__out_reserve(t, n + records * (size_t)exp) != 0)
    return RMEM_ENOMEM;
  size_t off = 0;
  while (off < n) {
    int rc = mbedtls_ssl_write(&t->ssl, (const unsigned char *)p + off, n - off);
    if (rc > 0) {
      off += (size_t)rc;
      continue;
    }
    if (rc == MBEDTLS_ERR_SSL_ALLOC_FAILED)
      return RMEM_ENOMEM;
    /* WANT_WRITE cannot happen: the send callback always takes everything. */
    return tls__fail(t, rc);
  }
  return 0;
}

char *tls_out_take(tls_conn *t, size_t *len) {
  *len = 0;
  if (t->out_len == 0)
    return NULL;
  char *p = t->out;
  *len = t->out_len;
  t->out = NULL;
  t->out_len = t->out_cap = 0;
  return p;
}

int tls_handshake_done(const tls_conn *t) {
  return t->handshake_done;
}

int tls_peer_verified(const tls_conn *t) {
  return t->handshake_done && mbedtls_ssl_get_peer_cert(&t->ssl) != NULL &&
         mbedtls_ssl_get_verify_result(&t->ssl) == 0;
}

void tls_peer_subject(const tls_conn *t, char *out, size_t n) {
  const mbedtls_x509_crt *crt = mbedtls_ssl_get_peer_cert(&t->ssl);
  if (n == 0)
    return;
  out[0] = '\0';
  if (crt && mbedtls_x509_dn_gets(out, n, &crt->subject) < 0)
    out[0] = '\0';
}

const char *tls_suite(const tls_conn *t) {
  return mbedtls_ssl_get_ciphersuite(&t->ssl);
}

const char *tls_error(const tls_conn *t) {
  return t->err[0] ? t->err : "unknown TLS error";
}

int tls_is_handshake_byte(unsigned char first) {
  return first == MBEDTLS_SSL_MSG_HANDSHAKE;
}
