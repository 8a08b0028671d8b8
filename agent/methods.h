/* One handler per method, each in its own file: method_<name>.c. */
#ifndef RMEM_METHODS_H
#define RMEM_METHODS_H

#include "dispatch.h"

extern const dispatch_method method_cache;
extern const dispatch_method method_deref;
extern const dispatch_method method_fill;
extern const dispatch_method method_hello;
extern const dispatch_method method_map;
extern const dispatch_method method_ps;
extern const dispatch_method method_read;
extern const dispatch_method method_read_string;
extern const dispatch_method method_readv;
extern const dispatch_method method_write;

#endif
