// CCUDA: the CUDA driver, NVRTC and cuBLAS reached through dlopen at run time. Nothing here needs
// CUDA's headers or libraries to build: the few types and entry points used are declared in
// ccuda.c, and every call reports failure as a message instead of aborting, so the same binary
// runs (on the CPU) where no GPU exists.
#ifndef CCUDA_H
#define CCUDA_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// A device address (CUdeviceptr).
typedef unsigned long long ccuda_ptr;

/// Loads libcuda.so.1, initialises the driver and makes device `ordinal`'s primary context
/// current. Returns 0, or -1 with a message in ccuda_error(). Idempotent.
int ccuda_open(int ordinal);
/// Loads NVRTC and cuBLAS (searched in LD_LIBRARY_PATH, LMDEPLOY_CUDA_LIBS, CUDA_HOME,
/// /usr/local/cuda and pip's nvidia-* wheels) and creates the cuBLAS handle. 0 or -1.
int ccuda_open_compute(void);
/// Loads NVRTC alone (no driver or GPU needed): enough to compile kernels. 0 or -1.
int ccuda_open_nvrtc(void);
/// The last error of this thread, or "".
const char *ccuda_error(void);
/// Where each library was found (or why not), one per line, for check-env.
const char *ccuda_libraries(void);

/// Driver facts (valid after ccuda_open).
int ccuda_driver_version(void);
int ccuda_device_count(void);
const char *ccuda_device_name(void);
int ccuda_compute_capability(void);   ///< major*10 + minor
int ccuda_multiprocessors(void);
int ccuda_nvrtc_version(void);        ///< major*1000 + minor*10, after ccuda_open_compute
int ccuda_cublas_version(void);

int ccuda_mem_info(size_t *free_bytes, size_t *total_bytes);
int ccuda_alloc(ccuda_ptr *out, size_t bytes);
int ccuda_free(ccuda_ptr p);
int ccuda_memset(ccuda_ptr p, size_t bytes);
/// Pinned host memory for fast downloads.
int ccuda_host_alloc(void **out, size_t bytes);
int ccuda_host_free(void *p);
int ccuda_upload(ccuda_ptr dst, const void *src, size_t bytes);
/// Enqueues a copy on the op stream and returns at once: `pinned_src` (from ccuda_host_alloc) must
/// stay unchanged until the stream has passed it.
int ccuda_upload_async(ccuda_ptr dst, const void *pinned_src, size_t bytes);
int ccuda_download(void *dst, ccuda_ptr src, size_t bytes);
int ccuda_copy(ccuda_ptr dst, ccuda_ptr src, size_t bytes);
int ccuda_sync(void);

/// Compiles CUDA C++ `source` with NVRTC for sm_<arch> into a cubin (caller frees *cubin with
/// free()). On failure the compiler log is in ccuda_error().
int ccuda_compile(const char *source, const char *name, int arch, void **cubin, size_t *size);
/// Loads a cubin; *module is an opaque handle.
int ccuda_load_module(const void *image, void **module);
int ccuda_get_function(void *module, const char *name, void **function);
/// Launches `function` on the op stream with `params` (an array of pointers to each argument); on
/// sm_90+ with programmatic dependent launch (unless LMDEPLOY_CUDA_PDL=0), so every kernel must wait
/// (griddepcontrol.wait) before it touches memory the kernels before it touch.
int ccuda_launch(void *function, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                 unsigned shared_bytes, void **params);
/// Raises a kernel's dynamic shared-memory limit.
int ccuda_set_max_shared(void *function, int bytes);

/// Row-major out[m][n] (fp32) = x[m][k] (fp16) · w[n][k]ᵀ (fp16) (+ out when `accumulate`), fp32
/// accumulation (cuBLAS GemmEx, beta 0 or 1).
int ccuda_gemm_f16(ccuda_ptr w, ccuda_ptr x, ccuda_ptr out, int m, int n, int k, int accumulate);
/// The same product rounded to fp16 on the way out (out_h fp16 [m][n], beta 0): half the bytes for
/// an output that only feeds an fp16 consumer.
int ccuda_gemm_f16_out16(ccuda_ptr w, ccuda_ptr x, ccuda_ptr out_h, int m, int n, int k);

/// CUDA graphs of the op stream: begin capturing (ops are recorded, not run), end it and
/// instantiate the graph (exec NULL: abandon the capture), launch it, free it.
int ccuda_capture_begin(void);
int ccuda_capture_end(void **exec);
int ccuda_graph_launch(void *exec);
int ccuda_graph_destroy(void *exec);

/// Events on the op stream (profiling): create, record now, milliseconds between two (waits for `end`).
int ccuda_event_create(void **event);
int ccuda_event_record(void *event);
int ccuda_event_elapsed(void *start, void *end, float *ms);

#ifdef __cplusplus
}
#endif
#endif
