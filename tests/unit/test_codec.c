/* The error table and common/codec.c: the pre-check of untrusted msgpack,
 * message classification, framing and the typed parameter getters. */
#include "codec.h"
#include "rmem_error.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))
#define MAX_OBJECTS 65536

/* Hex text to bytes, spaces allowed. Returns the length. */
static size_t unhex(const char *hex, unsigned char *out, size_t cap) {
  size_t n = 0;
  for (const char *s = hex; *s; s++) {
    if (*s == ' ')
      continue;
    unsigned v;
    assert_int_equal(sscanf(s, "%2x", &v), 1);
    assert_true(n < cap);
    out[n++] = (unsigned char)v;
    s++;
  }
  return n;
}

/* Error table. */

static const struct {
  int code;
  const char *name;
  const char *msg;
} errors[] = {
#define ROW(name, code, msg) {code, "RMEM_" #name, msg},
    RMEM_ERRNO_MAP(ROW)
#undef ROW
};

static void test_error_table(void **state) {
  for (size_t i = 0; i < COUNT(errors); i++) {
    /* Stable numbering: -1, -2, ... with no gaps. */
    assert_int_equal(errors[i].code, -(int)(i + 1));
    assert_string_equal(rmem_err_name(errors[i].code), errors[i].name);
    assert_string_equal(rmem_strerror(errors[i].code), errors[i].msg);
    assert_int_equal(rmem_err_from_name(errors[i].name), errors[i].code);
    for (size_t j = 0; j < i; j++) {
      assert_int_not_equal(errors[i].code, errors[j].code);
      assert_string_not_equal(errors[i].name, errors[j].name);
      assert_string_not_equal(errors[i].msg, errors[j].msg);
    }
  }
  /* The numbers PROTOCOL.md fixes. */
  assert_int_equal(RMEM_EMALFORMED, -1);
  assert_int_equal(RMEM_EFAULT, -7);
  assert_int_equal(RMEM_EUNMAPPED, -15);
  assert_int_equal(RMEM_EPROTO, -21);
  assert_int_equal(RMEM_ETLS, -22);
  assert_int_equal(RMEM_ECANCELED, -23);
  assert_int_equal(COUNT(errors), 23);

  assert_string_equal(rmem_err_name(0), "RMEM_OK");
  assert_string_equal(rmem_strerror(0), "success");
  assert_string_equal(rmem_err_name(-999), "RMEM_UNKNOWN");
  assert_string_equal(rmem_strerror(1), "unknown error");
  assert_int_equal(rmem_err_from_name("RMEM_NOPE"), 0);
  assert_int_equal(rmem_err_from_name("EFAULT"), 0);
  assert_int_equal(rmem_err_from_name(""), 0);

  assert_int_equal(rmem_err_from_errno(0), 0);
  assert_int_equal(rmem_err_from_errno(ESRCH), RMEM_ENOPROC);
  assert_int_equal(rmem_err_from_errno(EACCES), RMEM_EPERM);
  assert_int_equal(rmem_err_from_errno(EFAULT), RMEM_EFAULT);
  assert_int_equal(rmem_err_from_errno(EIO), RMEM_EIO);
  assert_int_equal(rmem_err_from_errno(ECONNREFUSED), RMEM_ECONNECT);
  assert_int_equal(rmem_err_from_errno(EXDEV), RMEM_EINTERNAL);
}

/* codec_check. */

static const struct {
  const char *hex;
  int rc;
} check_cases[] = {
    {"", RMEM_EMALFORMED},
    {"c0", 0},
    {"c1", RMEM_EMALFORMED}, /* Never used. */
    {"c0 c0", RMEM_EMALFORMED},
    {"91 c0 c0", RMEM_EMALFORMED},
    {"7f", 0},
    {"e0", 0},
    {"c2", 0},
    {"c3", 0},
    /* Truncated integers and floats. */
    {"cc", RMEM_EMALFORMED},
    {"cd 01", RMEM_EMALFORMED},
    {"ce 01 02 03", RMEM_EMALFORMED},
    {"cf 01 02 03 04 05 06 07", RMEM_EMALFORMED},
    {"cf 01 02 03 04 05 06 07 08", 0},
    {"d0", RMEM_EMALFORMED},
    {"d1 ff", RMEM_EMALFORMED},
    {"d2 ff ff ff", RMEM_EMALFORMED},
    {"d3 ff ff ff ff ff ff ff", RMEM_EMALFORMED},
    {"ca 00 00 00", RMEM_EMALFORMED},
    {"cb 00 00 00 00 00 00 00", RMEM_EMALFORMED},
    {"cb 00 00 00 00 00 00 00 00", 0},
    /* Truncated strings and bins. */
    {"a3 61 62", RMEM_EMALFORMED},
    {"a3 61 62 63", 0},
    {"d9", RMEM_EMALFORMED},
    {"d9 05 61 62", RMEM_EMALFORMED},
    {"da 00", RMEM_EMALFORMED},
    {"da 00 01", RMEM_EMALFORMED},
    {"da 00 01 61", 0},
    {"db ff ff ff ff 00", RMEM_EMALFORMED},
    {"c4", RMEM_EMALFORMED},
    {"c4 02 00", RMEM_EMALFORMED},
    {"c4 00", 0},
    {"c5 00 03 00 00", RMEM_EMALFORMED},
    {"c6 00 00 00 01", RMEM_EMALFORMED},
    {"c6 ff ff ff ff 00 00", RMEM_EMALFORMED},
    /* Extensions. */
    {"d4 01", RMEM_EMALFORMED},
    {"d4 01 00", 0},
    {"d8 01 00", RMEM_EMALFORMED},
    {"c7 01 05", RMEM_EMALFORMED},
    {"c7 01 05 00", 0},
    {"c9 ff ff ff ff 05", RMEM_EMALFORMED},
    /* Containers whose count exceeds the bytes left. */
    {"92 c0", RMEM_EMALFORMED},
    {"81 c0", RMEM_EMALFORMED},
    {"dc", RMEM_EMALFORMED},
    {"dc 00", RMEM_EMALFORMED},
    {"dc 00 00", 0},
    {"dc 00 02 c0", RMEM_EMALFORMED},
    {"dc 00 02 c0 c0", 0},
    {"dc ff ff c0 c0", RMEM_EMALFORMED},
    {"dd ff ff ff ff", RMEM_EMALFORMED}, /* 4 G elements in 5 bytes. */
    {"dd ff ff ff ff c0 c0 c0", RMEM_EMALFORMED},
    {"dd 00 00 00", RMEM_EMALFORMED},
    {"dd 00 00 00 01 c0", 0},
    {"de 00 01 c0", RMEM_EMALFORMED},
    {"de 00 01 c0 c0", 0},
    {"de ff ff c0 c0", RMEM_EMALFORMED},
    {"df ff ff ff ff", RMEM_EMALFORMED},
    {"df 80 00 00 00 c0 c0", RMEM_EMALFORMED}, /* 2 * count overflows 32 bits. */
    {"df 00 00 00 01 c0 c0", 0},
    /* Nesting. */
    {"91 91 91 c0", 0},
    {"91 91 91", RMEM_EMALFORMED},
    {"82 a1 61 91 c0 a1 62 80", 0},
    {"82 a1 61 91 c0 a1 62", RMEM_EMALFORMED},
};

static void test_check(void **state) {
  unsigned char buf[64];
  for (size_t i = 0; i < COUNT(check_cases); i++) {
    size_t n = unhex(check_cases[i].hex, buf, sizeof(buf));
    int rc = codec_check(buf, n, MAX_OBJECTS);
    if (rc != check_cases[i].rc)
      fail_msg("codec_check(%s) = %d, want %d", check_cases[i].hex, rc, check_cases[i].rc);
  }
}

/* An array16 of `n` nils: 1 + n objects. */
static unsigned char *nils(size_t n, size_t *len) {
  unsigned char *p = malloc(3 + n);
  assert_non_null(p);
  p[0] = 0xdc;
  p[1] = (unsigned char)(n >> 8);
  p[2] = (unsigned char)n;
  memset(p + 3, 0xc0, n);
  *len = 3 + n;
  return p;
}

static void test_check_limits(void **state) {
  size_t len;
  unsigned char *p = nils(65535, &len);
  assert_int_equal(codec_check(p, len, MAX_OBJECTS), 0);
  assert_int_equal(codec_check(p, len, MAX_OBJECTS - 1), RMEM_ETOOBIG);
  assert_int_equal(codec_check(p, len - 1, MAX_OBJECTS), RMEM_EMALFORMED);
  free(p);

  /* [[nil x 65535], nil]: 65538 objects. */
  unsigned char two[4 + 65535 + 1];
  two[0] = 0x92;
  two[1] = 0xdc;
  two[2] = 0xff;
  two[3] = 0xff;
  memset(two + 4, 0xc0, 65536);
  assert_int_equal(codec_check(two, sizeof(two), MAX_OBJECTS), RMEM_ETOOBIG);
  assert_int_equal(codec_check(two, sizeof(two), MAX_OBJECTS + 1), RMEM_ETOOBIG);
  assert_int_equal(codec_check(two, sizeof(two), MAX_OBJECTS + 2), 0);

  /* Small maps count keys and values. */
  static const unsigned char map[] = {0x81, 0xc0, 0xc0};
  assert_int_equal(codec_check(map, sizeof(map), 2), RMEM_ETOOBIG);
  assert_int_equal(codec_check(map, sizeof(map), 3), 0);

  /* Deep nesting passes the byte check but not msgpack-c's stack limit:
   * decode refuses it cleanly. */
  enum { DEPTH = 10000 };
  unsigned char *deep = malloc(DEPTH + 1);
  assert_non_null(deep);
  memset(deep, 0x91, DEPTH);
  deep[DEPTH] = 0xc0;
  assert_int_equal(codec_check(deep, DEPTH + 1, MAX_OBJECTS), 0);
  msgpack_unpacked up;
  msgpack_unpacked_init(&up);
  codec_msg m;
  assert_int_equal(codec_msg_decode((const char *)deep, DEPTH + 1, MAX_OBJECTS, &up, &m, NULL, 0),
                   RMEM_EMALFORMED);
  msgpack_unpacked_destroy(&up);
  free(deep);
}

/* codec_msg_decode. */

static const struct {
  const char *hex;
  int rc;
  int type;
  int has_msgid;
  uint32_t msgid;
} decode_cases[] = {
    {"", RMEM_EMALFORMED, 0, 0, 0},
    {"c0", RMEM_EMALFORMED, 0, 0, 0},
    {"81 a1 61 c0", RMEM_EMALFORMED, 0, 0, 0},
    {"94 00 01 a1 78", RMEM_EMALFORMED, 0, 0, 0}, /* Truncated. */
    {"94 00 01 a1 78 80 c0", RMEM_EMALFORMED, 0, 0, 0},
    {"92 00 01", RMEM_EMALFORMED, 0, 0, 0},
    {"93 00 01 a1 78", RMEM_EMALFORMED, 0, 1, 1},
    {"95 00 01 a1 78 80 c0", RMEM_EMALFORMED, 0, 1, 1},
    {"94 03 01 a1 78 80", RMEM_EMALFORMED, 0, 0, 0},
    {"94 ff 01 a1 78 80", RMEM_EMALFORMED, 0, 0, 0},
    {"94 a1 30 01 a1 78 80", RMEM_EMALFORMED, 0, 0, 0},
    {"94 c0 01 a1 78 80", RMEM_EMALFORMED, 0, 0, 0},
    /* msgid. */
    {"94 00 ff a1 78 80", RMEM_EMALFORMED, 0, 0, 0},
    {"94 00 d0 80 a1 78 80", RMEM_EMALFORMED, 0, 0, 0},
    {"94 00 cf 00 00 00 01 00 00 00 00 a1 78 80", RMEM_EMALFORMED, 0, 0, 0},
    {"94 00 a1 31 a1 78 80", RMEM_EMALFORMED, 0, 0, 0},
    {"94 00 c0 a1 78 80", RMEM_EMALFORMED, 0, 0, 0}, /* Only responses may have nil. */
    {"94 00 ce ff ff ff ff a1 78 80", 0, CODEC_REQUEST, 1, 0xffffffff},
    {"94 00 d0 05 a1 78 80", 0, CODEC_REQUEST, 1, 5}, /* Not shortest, still an int. */
    /* method and params. */
    {"94 00 01 07 80", RMEM_EMALFORMED, 0, 1, 1},
    {"94 00 01 c4 01 78 80", RMEM_EMALFORMED, 0, 1, 1},
    {"94 00 01 a1 78 90", RMEM_EMALFORMED, 0, 1, 1},
    {"94 00 01 a1 78 07", RMEM_EMALFORMED, 0, 1, 1},
    {"94 00 01 a1 78 c0", 0, CODEC_REQUEST, 1, 1},
    {"94 00 01 a1 78 81 a1 61 01", 0, CODEC_REQUEST, 1, 1},
    /* Responses. */
    {"94 01 c0 81 a4 63 6f 64 65 ff c0", 0, CODEC_RESPONSE, 0, 0},
    {"94 01 05 c0 81 a1 61 01", 0, CODEC_RESPONSE, 1, 5},
    {"94 01 05 c0 c0", 0, CODEC_RESPONSE, 1, 5},
    {"94 01 05 07 c0", RMEM_EMALFORMED, 0, 1, 5},
    {"93 01 05 c0", RMEM_EMALFORMED, 0, 1, 5},
    {"93 01 c0 c0", RMEM_EMALFORMED, 0, 0, 0},
    /* Notifications. */
    {"93 02 a1 6e 80", 0, CODEC_NOTIFY, 0, 0},
    {"93 02 a1 6e c0", 0, CODEC_NOTIFY, 0, 0},
    {"93 02 01 80", RMEM_EMALFORMED, 0, 0, 0},
    {"93 02 a1 6e 90", RMEM_EMALFORMED, 0, 0, 0},
    {"94 02 a1 6e 80 c0", RMEM_EMALFORMED, 0, 0, 0},
};

static void test_decode(void **state) {
  unsigned char buf[64];
  for (size_t i = 0; i < COUNT(decode_cases); i++) {
    size_t n = unhex(decode_cases[i].hex, buf, sizeof(buf));
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    codec_msg m;
    char why[128] = "";
    int rc = codec_msg_decode((const char *)buf, n, MAX_OBJECTS, &up, &m, why, sizeof(why));
    if (rc != decode_cases[i].rc || m.has_msgid != decode_cases[i].has_msgid ||
        (m.has_msgid && m.msgid != decode_cases[i].msgid))
      fail_msg("decode(%s) = %d has_msgid %d msgid %u (%s)", decode_cases[i].hex, rc, m.has_msgid,
               m.msgid, why);
    if (rc == 0)
      assert_int_equal(m.type, decode_cases[i].type);
    else
      assert_true(why[0] != '\0');
    msgpack_unpacked_destroy(&up);
  }
}

static void test_decode_fields(void **state) {
  unsigned char buf[64];
  msgpack_unpacked up;
  msgpack_unpacked_init(&up);
  codec_msg m;
  size_t n = unhex("94 00 09 a4 72 65 61 64 c0", buf, sizeof(buf));
  assert_int_equal(codec_msg_decode((const char *)buf, n, MAX_OBJECTS, &up, &m, NULL, 0), 0);
  assert_int_equal(m.method_len, 4);
  assert_memory_equal(m.method, "read", 4);
  assert_null(m.params);

  n = unhex("94 01 09 81 a4 63 6f 64 65 f9 c0", buf, sizeof(buf));
  assert_int_equal(codec_msg_decode((const char *)buf, n, MAX_OBJECTS, &up, &m, NULL, 0), 0);
  assert_non_null(m.error);
  assert_null(m.result);
  assert_null(m.method);

  /* A message over the object limit. */
  size_t len;
  unsigned char *p = nils(65535, &len);
  unsigned char *req = malloc(len + 8);
  assert_non_null(req);
  static const unsigned char head[] = {0x94, 0x00, 0x01, 0xa1, 0x78, 0x81, 0xa1, 0x61};
  memcpy(req, head, sizeof(head));
  memcpy(req + sizeof(head), p, len);
  char why[128];
  assert_int_equal(codec_msg_decode((const char *)req, len + sizeof(head), MAX_OBJECTS, &up, &m,
                                    why, sizeof(why)),
                   RMEM_ETOOBIG);
  assert_false(m.has_msgid);
  free(req);
  free(p);
  msgpack_unpacked_destroy(&up);
}

/* Framing and packing helpers. */

static void test_frames(void **state) {
  unsigned char hdr[4];
  codec_frame_put_len(hdr, 0x01020304);
  assert_int_equal(hdr[0], 1);
  assert_int_equal(hdr[3], 4);
  assert_int_equal(codec_frame_len(hdr), 0x01020304);
  codec_frame_put_len(hdr, UINT32_MAX);
  assert_int_equal(codec_frame_len(hdr), UINT32_MAX);

  /* Two frames in one buffer. */
  codec_buf b;
  codec_buf_init(&b);
  msgpack_packer pk;
  codec_frame_begin(&b, &pk);
  codec_pack_request_head(&pk, 9, "ps", 0);
  assert_int_equal(codec_frame_end(&b, 0), 0);
  size_t second = b.len;
  assert_int_equal(codec_error_frame(&b, NULL, RMEM_EFRAME, NULL), 0);
  unsigned char want[32];
  size_t n = unhex("00 00 00 07 94 00 09 a2 70 73 80", want, sizeof(want));
  assert_int_equal(second, n);
  assert_memory_equal(b.data, want, n);
  assert_int_equal(codec_frame_len(b.data + second), b.len - second - CODEC_FRAME_HDR);

  msgpack_unpacked up;
  msgpack_unpacked_init(&up);
  codec_msg m;
  assert_int_equal(codec_msg_decode(b.data + second + CODEC_FRAME_HDR,
                                    b.len - second - CODEC_FRAME_HDR, MAX_OBJECTS, &up, &m, NULL,
                                    0),
                   0);
  assert_int_equal(m.type, CODEC_RESPONSE);
  assert_false(m.has_msgid);
  /* No message given: the table's. */
  assert_true(codec_str_eq(codec_map_get(m.error, "message"), "frame too large"));
  assert_true(codec_str_eq(codec_map_get(m.error, "name"), "RMEM_EFRAME"));
  msgpack_unpacked_destroy(&up);

  size_t len;
  char *data = codec_buf_steal(&b, &len);
  assert_null(b.data);
  assert_int_equal(b.len, 0);
  assert_true(len > n);
  free(data);
  codec_buf_free(&b);
}

/* Parameter getters. */

static void test_getters(void **state) {
  unsigned char buf[128];
  /* {u: 5, big: 2^33, neg: -1, s: "str", b: true, bin: bin(2), nil: nil} */
  size_t n = unhex("87 a1 75 05 a3 62 69 67 cf 00 00 00 02 00 00 00 00 a3 6e 65 67 ff"
                   " a1 73 a3 73 74 72 a1 62 c3 a3 62 69 6e c4 02 01 02 a3 6e 69 6c c0",
                   buf, sizeof(buf));
  msgpack_unpacked up;
  msgpack_unpacked_init(&up);
  size_t off = 0;
  assert_int_equal(msgpack_unpack_next(&up, (const char *)buf, n, &off), MSGPACK_UNPACK_SUCCESS);
  const msgpack_object *map = &up.data;
  codec_err err = {0};
  uint64_t u64;
  uint32_t u32;
  int b;
  const char *s;
  size_t len;

  assert_int_equal(codec_get_u64(map, "u", 1, &u64, &err), 0);
  assert_int_equal(u64, 5);
  assert_int_equal(codec_get_u64(map, "big", 1, &u64, &err), 0);
  assert_int_equal(u64, 1ull << 33);
  assert_int_equal(codec_get_u32(map, "u", 1, &u32, &err), 0);
  assert_int_equal(u32, 5);

  assert_int_equal(codec_get_u32(map, "big", 1, &u32, &err), RMEM_EPARAM);
  assert_string_equal(err.msg, "parameter 'big' does not fit 32 bits");
  assert_int_equal(codec_get_u64(map, "neg", 1, &u64, &err), RMEM_EPARAM);
  assert_string_equal(err.msg, "parameter 'neg' must not be negative");
  assert_int_equal(codec_get_u32(map, "neg", 0, &u32, &err), RMEM_EPARAM);
  assert_int_equal(codec_get_u64(map, "s", 1, &u64, &err), RMEM_EPARAM);
  assert_string_equal(err.msg, "parameter 's' must be an unsigned integer");
  assert_int_equal(err.code, RMEM_EPARAM);

  err.code = 0;
  assert_int_equal(codec_get_u64(map, "missing", 1, &u64, &err), RMEM_EPARAM);
  assert_string_equal(err.msg, "missing parameter 'missing'");
  assert_int_equal(err.code, RMEM_EPARAM);
  u64 = 77;
  assert_int_equal(codec_get_u64(map, "missing", 0, &u64, &err), 1);
  assert_int_equal(u64, 77);
  /* Nil is absent. */
  assert_int_equal(codec_get_u64(map, "nil", 0, &u64, &err), 1);
  assert_int_equal(codec_get_u64(map, "nil", 1, &u64, &err), RMEM_EPARAM);
  assert_string_equal(err.msg, "missing parameter 'nil'");
  /* A nil params map reads as empty. */
  assert_int_equal(codec_get_u64(NULL, "u", 0, &u64, &err), 1);
  assert_int_equal(codec_get_u64(NULL, "u", 1, &u64, &err), RMEM_EPARAM);
  /* Lookups are exact: no prefix matches. */
  assert_int_equal(codec_get_u64(map, "bi", 0, &u64, &err), 1);

  assert_int_equal(codec_get_bool(map, "b", 1, &b, &err), 0);
  assert_true(b);
  assert_int_equal(codec_get_bool(map, "u", 1, &b, &err), RMEM_EPARAM);
  assert_string_equal(err.msg, "parameter 'u' must be a boolean");

  assert_int_equal(codec_get_str(map, "s", 1, &s, &len, &err), 0);
  assert_int_equal(len, 3);
  assert_memory_equal(s, "str", 3);
  assert_int_equal(codec_get_str(map, "bin", 1, &s, &len, &err), RMEM_EPARAM);
  assert_string_equal(err.msg, "parameter 'bin' must be a string");

  assert_int_equal(codec_get_bin(map, "bin", 1, &s, &len, &err), 0);
  assert_int_equal(len, 2);
  assert_memory_equal(s, "\x01\x02", 2);
  assert_int_equal(codec_get_bin(map, "s", 1, &s, &len, &err), RMEM_EPARAM);
  assert_string_equal(err.msg, "parameter 's' must be bin");

  /* A NULL err is allowed. */
  assert_int_equal(codec_get_u64(map, "s", 1, &u64, NULL), RMEM_EPARAM);

  assert_null(codec_map_get(&map->via.map.ptr[0].val, "u"));
  assert_true(codec_str_eq(&map->via.map.ptr[3].val, "str"));
  assert_false(codec_str_eq(&map->via.map.ptr[3].val, "st"));
  assert_false(codec_str_eq(&map->via.map.ptr[0].val, "5"));
  msgpack_unpacked_destroy(&up);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_error_table),   cmocka_unit_test(test_check),
      cmocka_unit_test(test_check_limits),  cmocka_unit_test(test_decode),
      cmocka_unit_test(test_decode_fields), cmocka_unit_test(test_frames),
      cmocka_unit_test(test_getters),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
