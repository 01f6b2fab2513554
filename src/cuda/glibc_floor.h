/*
 * glibc_floor.h: forced into every source of libgpulet-cuda.so (and of
 * nothing else, see CMakeLists.txt) so that the interposer loads into
 * programs running on glibc 2.31, the C library of Ubuntu 20.04 CUDA
 * images, although it is built on a newer one. glibc 2.34 moved the dl*
 * and pthread functions into libc.so.6 under a new version (GLIBC_2.34)
 * and 2.33 made fstat a symbol of its own; a library asking for those
 * versions is not loaded by an older glibc, and the slice is then refused
 * rather than enforced. Each is bound here to the oldest version that
 * glibc still serves (libdl.so.2 and libpthread.so.0 carry them before
 * 2.34, and are linked in for that). `objdump -T` of the library shows no
 * version newer than GLIBC_2.17; tests/integration/test_cuda_old_glibc.py
 * loads it in a Debian bullseye (glibc 2.31) userland. dlopen, dlmopen and
 * dlsym are not here: the interposer defines its own, and finds glibc's
 * with dlvsym, by the version the running glibc has.
 */
#ifndef GPULET_GLIBC_FLOOR_H
#define GPULET_GLIBC_FLOOR_H

#if defined(__x86_64__)
#include <sys/stat.h>

__asm__(".symver dlclose,dlclose@GLIBC_2.2.5");
__asm__(".symver dlvsym,dlvsym@GLIBC_2.2.5");
__asm__(".symver dladdr,dladdr@GLIBC_2.2.5");
__asm__(".symver pthread_once,pthread_once@GLIBC_2.2.5");
__asm__(".symver pthread_mutexattr_init,pthread_mutexattr_init@GLIBC_2.2.5");
__asm__(".symver pthread_mutexattr_destroy,pthread_mutexattr_destroy@GLIBC_2.2.5");
__asm__(".symver pthread_mutexattr_setpshared,pthread_mutexattr_setpshared@GLIBC_2.2.5");
__asm__(".symver pthread_mutexattr_setrobust,pthread_mutexattr_setrobust@GLIBC_2.12");
__asm__(".symver pthread_mutex_consistent,pthread_mutex_consistent@GLIBC_2.12");

/* Before 2.33 fstat was an inline call of __fxstat (version 1 of struct
 * stat on x86-64). */
int __fxstat(int ver, int fd, struct stat *st);
__asm__(".symver __fxstat,__fxstat@GLIBC_2.2.5");
#define fstat(fd, st) __fxstat(1, (fd), (st))
#endif

#endif
