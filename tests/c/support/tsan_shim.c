/* gcc's libtsan lacks the __tsan_mem* entry points that LLVM (rustc
   -Zsanitizer=thread) emits; route them to the intercepted libc calls,
   which TSan checks as usual. Linked only into the Rust-instrumented run. */
#include <string.h>
void *__tsan_memset(void *d, int c, size_t n) { return memset(d, c, n); }
void *__tsan_memcpy(void *d, const void *s, size_t n) { return memcpy(d, s, n); }
void *__tsan_memmove(void *d, const void *s, size_t n) { return memmove(d, s, n); }
