// The CUDA driver, NVRTC and cuBLAS through dlopen. The declarations below are the handful of
// types and entry points this project calls, written from the public API documentation; their
// ABI has been stable since CUDA 11 (the _v2 driver symbols are the 64-bit ones).
#define _GNU_SOURCE
#include "ccuda.h"

#include <dlfcn.h>
#include <glob.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;      // 0 = CUDA_SUCCESS
typedef int CUdevice;
typedef void *CUcontext;
typedef void *CUmodule;
typedef void *CUfunction;
typedef void *CUstream;
typedef void *CUevent;
typedef void *CUgraph;
typedef void *CUgraphExec;
typedef int nvrtcResult;   // 0 = NVRTC_SUCCESS
typedef void *nvrtcProgram;
typedef int cublasStatus;  // 0 = CUBLAS_STATUS_SUCCESS
typedef void *cublasHandle;

enum { ATTR_MAX_SHARED_PER_BLOCK_OPTIN = 97, ATTR_CC_MAJOR = 75, ATTR_CC_MINOR = 76, ATTR_SM_COUNT = 16 };
enum { FUNC_ATTR_MAX_DYNAMIC_SHARED = 8 };
enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1, CUDA_R_32F = 0, CUDA_R_16F = 2, CUBLAS_COMPUTE_32F = 68,
       CUBLAS_GEMM_DEFAULT = -1 };

// cuLaunchKernelEx's configuration (cuda.h's CUlaunchConfig / CUlaunchAttribute layouts).
typedef struct {
    int id;
    char pad[4];
    union {
        char bytes[64];
        int value;
    } value;
} LaunchAttribute;
typedef struct {
    unsigned grid[3], block[3], shared_bytes;
    CUstream stream;
    LaunchAttribute *attrs;
    unsigned count;
} LaunchConfig;
enum { LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION = 6 };

static struct {
    CUresult (*Init)(unsigned);
    CUresult (*DriverGetVersion)(int *);
    CUresult (*DeviceGetCount)(int *);
    CUresult (*DeviceGet)(CUdevice *, int);
    CUresult (*DeviceGetName)(char *, int, CUdevice);
    CUresult (*DeviceGetAttribute)(int *, int, CUdevice);
    CUresult (*DevicePrimaryCtxRetain)(CUcontext *, CUdevice);
    CUresult (*CtxSetCurrent)(CUcontext);
    CUresult (*CtxSynchronize)(void);
    CUresult (*MemGetInfo)(size_t *, size_t *);
    CUresult (*MemAlloc)(ccuda_ptr *, size_t);
    CUresult (*MemFree)(ccuda_ptr);
    CUresult (*MemAllocHost)(void **, size_t);
    CUresult (*MemFreeHost)(void *);
    CUresult (*MemsetD8)(ccuda_ptr, unsigned char, size_t);
    CUresult (*MemcpyHtoD)(ccuda_ptr, const void *, size_t);
    CUresult (*MemcpyHtoDAsync)(ccuda_ptr, const void *, size_t, CUstream);
    CUresult (*MemcpyDtoH)(void *, ccuda_ptr, size_t);
    CUresult (*MemcpyDtoD)(ccuda_ptr, ccuda_ptr, size_t);
    CUresult (*ModuleLoadData)(CUmodule *, const void *);
    CUresult (*ModuleGetFunction)(CUfunction *, CUmodule, const char *);
    CUresult (*FuncSetAttribute)(CUfunction, int, int);
    CUresult (*LaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream,
                             void **, void **);
    // CUDA 12+: launches with attributes (programmatic dependent launch); NULL on older drivers.
    CUresult (*LaunchKernelEx)(const void *config, CUfunction, void **, void **);
    CUresult (*GetErrorString)(CUresult, const char **);
    // The one stream every op is enqueued on (blocking: it orders with the legacy stream, so the
    // synchronous copies still see its work), and what graph capture and timing need.
    CUresult (*StreamCreate)(CUstream *, unsigned);
    CUresult (*StreamBeginCapture)(CUstream, int);
    CUresult (*StreamEndCapture)(CUstream, CUgraph *);
    CUresult (*GraphInstantiate)(CUgraphExec *, CUgraph, unsigned long long);
    CUresult (*GraphLaunch)(CUgraphExec, CUstream);
    CUresult (*GraphExecDestroy)(CUgraphExec);
    CUresult (*GraphDestroy)(CUgraph);
    CUresult (*EventCreate)(CUevent *, unsigned);
    CUresult (*EventRecord)(CUevent, CUstream);
    CUresult (*EventSynchronize)(CUevent);
    CUresult (*EventElapsedTime)(float *, CUevent, CUevent);
} cu;

static struct {
    nvrtcResult (*Version)(int *, int *);
    nvrtcResult (*CreateProgram)(nvrtcProgram *, const char *, const char *, int, const char *const *, const char *const *);
    nvrtcResult (*CompileProgram)(nvrtcProgram, int, const char *const *);
    nvrtcResult (*GetProgramLogSize)(nvrtcProgram, size_t *);
    nvrtcResult (*GetProgramLog)(nvrtcProgram, char *);
    nvrtcResult (*GetCUBINSize)(nvrtcProgram, size_t *);
    nvrtcResult (*GetCUBIN)(nvrtcProgram, char *);
    nvrtcResult (*DestroyProgram)(nvrtcProgram *);
    const char *(*GetErrorString)(nvrtcResult);
} nv;

static struct {
    cublasStatus (*Create)(cublasHandle *);
    cublasStatus (*GetVersion)(cublasHandle, int *);
    cublasStatus (*GemmEx)(cublasHandle, int, int, int, int, int, const void *, const void *, int, int, const void *, int,
                           int, const void *, void *, int, int, int, int);
    cublasStatus (*SetStream)(cublasHandle, CUstream);
    cublasStatus (*SetWorkspace)(cublasHandle, void *, size_t);   // optional (cuBLAS ≥ 11.x)
} cb;

static void *libcuda, *libnvrtc, *libcublas;
static CUcontext context;
static CUstream stream;
static ccuda_ptr blas_workspace;
static CUdevice device;
static cublasHandle blas;
static int opened, compute_opened, generation = 1;
static int driver_version, device_count, cc, sm_count, nvrtc_version, cublas_version;
static int pdl;   // kernels are launched with programmatic stream serialization
static char device_name[256];
static char libraries[4096];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t blas_lock = PTHREAD_MUTEX_INITIALIZER;
static __thread char error_text[8192];
static __thread int thread_generation;

static int fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_text, sizeof error_text, fmt, ap);
    va_end(ap);
    return -1;
}

const char *ccuda_error(void) { return error_text; }
const char *ccuda_libraries(void) { return libraries; }

static void note(const char *fmt, ...) {
    size_t used = strlen(libraries);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(libraries + used, sizeof libraries - used, fmt, ap);
    va_end(ap);
}

static int cu_check(CUresult r, const char *what) {
    if (r == 0) return 0;
    const char *s = NULL;
    if (cu.GetErrorString) cu.GetErrorString(r, &s);
    return fail("%s failed: CUDA error %d (%s)", what, r, s ? s : "unknown");
}

/// Makes the device's context current on the calling thread (the engine runs on its own thread).
static int ensure(void) {
    if (!opened) return fail("CUDA is not initialised (ccuda_open was not called or failed)");
    if (thread_generation != generation) {
        if (cu_check(cu.CtxSetCurrent(context), "cuCtxSetCurrent")) return -1;
        thread_generation = generation;
    }
    return 0;
}

#define SYM(lib, table, field, name)                                           \
    do {                                                                        \
        *(void **)&table.field = dlsym(lib, name);                              \
        if (!table.field) return fail("%s has no symbol %s", #lib, name);        \
    } while (0)

static int load_driver_symbols(void) {
    SYM(libcuda, cu, Init, "cuInit");
    SYM(libcuda, cu, DriverGetVersion, "cuDriverGetVersion");
    SYM(libcuda, cu, DeviceGetCount, "cuDeviceGetCount");
    SYM(libcuda, cu, DeviceGet, "cuDeviceGet");
    SYM(libcuda, cu, DeviceGetName, "cuDeviceGetName");
    SYM(libcuda, cu, DeviceGetAttribute, "cuDeviceGetAttribute");
    SYM(libcuda, cu, DevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain");
    SYM(libcuda, cu, CtxSetCurrent, "cuCtxSetCurrent");
    SYM(libcuda, cu, CtxSynchronize, "cuCtxSynchronize");
    SYM(libcuda, cu, MemGetInfo, "cuMemGetInfo_v2");
    SYM(libcuda, cu, MemAlloc, "cuMemAlloc_v2");
    SYM(libcuda, cu, MemFree, "cuMemFree_v2");
    SYM(libcuda, cu, MemAllocHost, "cuMemAllocHost_v2");
    SYM(libcuda, cu, MemFreeHost, "cuMemFreeHost");
    SYM(libcuda, cu, MemsetD8, "cuMemsetD8_v2");
    SYM(libcuda, cu, MemcpyHtoD, "cuMemcpyHtoD_v2");
    SYM(libcuda, cu, MemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2");
    SYM(libcuda, cu, MemcpyDtoH, "cuMemcpyDtoH_v2");
    SYM(libcuda, cu, MemcpyDtoD, "cuMemcpyDtoD_v2");
    SYM(libcuda, cu, ModuleLoadData, "cuModuleLoadData");
    SYM(libcuda, cu, ModuleGetFunction, "cuModuleGetFunction");
    SYM(libcuda, cu, FuncSetAttribute, "cuFuncSetAttribute");
    SYM(libcuda, cu, LaunchKernel, "cuLaunchKernel");
    *(void **)&cu.LaunchKernelEx = dlsym(libcuda, "cuLaunchKernelEx");   // optional
    SYM(libcuda, cu, GetErrorString, "cuGetErrorString");
    SYM(libcuda, cu, StreamCreate, "cuStreamCreate");
    SYM(libcuda, cu, StreamBeginCapture, "cuStreamBeginCapture_v2");
    SYM(libcuda, cu, StreamEndCapture, "cuStreamEndCapture");
    SYM(libcuda, cu, GraphInstantiate, "cuGraphInstantiateWithFlags");
    SYM(libcuda, cu, GraphLaunch, "cuGraphLaunch");
    SYM(libcuda, cu, GraphExecDestroy, "cuGraphExecDestroy");
    SYM(libcuda, cu, GraphDestroy, "cuGraphDestroy");
    SYM(libcuda, cu, EventCreate, "cuEventCreate");
    SYM(libcuda, cu, EventRecord, "cuEventRecord");
    SYM(libcuda, cu, EventSynchronize, "cuEventSynchronize");
    SYM(libcuda, cu, EventElapsedTime, "cuEventElapsedTime");
    return 0;
}

int ccuda_open(int ordinal) {
    pthread_mutex_lock(&lock);
    int rc = 0;
    if (opened) goto done;
    libcuda = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!libcuda) {
        rc = fail("no NVIDIA driver: libcuda.so.1 could not be loaded (%s)", dlerror());
        goto done;
    }
    if ((rc = load_driver_symbols()))
        goto done;
    cu.DriverGetVersion(&driver_version);
    if ((rc = cu_check(cu.Init(0), "cuInit (the driver is installed but no usable GPU answered)"))) goto done;
    if ((rc = cu_check(cu.DeviceGetCount(&device_count), "cuDeviceGetCount"))) goto done;
    if (device_count == 0) {
        rc = fail("the NVIDIA driver found no GPU");
        goto done;
    }
    if (ordinal < 0 || ordinal >= device_count) {
        rc = fail("GPU %d requested but the driver sees %d", ordinal, device_count);
        goto done;
    }
    if ((rc = cu_check(cu.DeviceGet(&device, ordinal), "cuDeviceGet"))) goto done;
    cu.DeviceGetName(device_name, sizeof device_name, device);
    int major = 0, minor = 0;
    cu.DeviceGetAttribute(&major, ATTR_CC_MAJOR, device);
    cu.DeviceGetAttribute(&minor, ATTR_CC_MINOR, device);
    cu.DeviceGetAttribute(&sm_count, ATTR_SM_COUNT, device);
    cc = major * 10 + minor;
    // Programmatic dependent launch (Hopper on): each kernel may start while the one before it
    // finishes, and waits (griddepcontrol.wait in kernels.cu) before touching what it produced.
    const char *pdl_env = getenv("LMDEPLOY_CUDA_PDL");
    pdl = cu.LaunchKernelEx && cc >= 90 && !(pdl_env && strcmp(pdl_env, "0") == 0);
    if ((rc = cu_check(cu.DevicePrimaryCtxRetain(&context, device), "cuDevicePrimaryCtxRetain"))) goto done;
    if ((rc = cu_check(cu.CtxSetCurrent(context), "cuCtxSetCurrent"))) goto done;
    if ((rc = cu_check(cu.StreamCreate(&stream, 0), "cuStreamCreate"))) goto done;
    opened = 1;
    generation++;
    note("libcuda.so.1: loaded (driver %d.%d)\n", driver_version / 1000, driver_version % 1000 / 10);
done:
    pthread_mutex_unlock(&lock);
    return rc;
}

/// dlopen of the first of `names` found: plain names first (LD_LIBRARY_PATH, ldconfig), then in
/// each candidate folder. NVRTC loads its builtins library by soname, so that one is preloaded
/// from the same folder.
static void *load_from(const char *dir, const char *const *names, char *found, size_t found_size, int nvrtc) {
    for (const char *const *n = names; *n; n++) {
        char path[4096];
        if (dir) snprintf(path, sizeof path, "%s/%s", dir, *n);
        else snprintf(path, sizeof path, "%s", *n);
        if (nvrtc && dir) {
            char pattern[4096];
            snprintf(pattern, sizeof pattern, "%s/libnvrtc-builtins.so*", dir);
            glob_t g;
            if (glob(pattern, 0, NULL, &g) == 0) {
                for (size_t i = 0; i < g.gl_pathc; i++) dlopen(g.gl_pathv[i], RTLD_NOW | RTLD_GLOBAL);
                globfree(&g);
            }
        }
        void *h = dlopen(path, RTLD_NOW | RTLD_GLOBAL);
        if (h) {
            snprintf(found, found_size, "%s", path);
            return h;
        }
    }
    return NULL;
}

static void *find_library(const char *const *names, char *found, size_t found_size, int nvrtc) {
    void *h = load_from(NULL, names, found, found_size, nvrtc);
    if (h) return h;
    char dirs[64][1024];
    int nd = 0;
    const char *env = getenv("LMDEPLOY_CUDA_LIBS");
    if (env) {
        char copy[8192];
        snprintf(copy, sizeof copy, "%s", env);
        for (char *save = NULL, *d = strtok_r(copy, ":", &save); d && nd < 64; d = strtok_r(NULL, ":", &save))
            snprintf(dirs[nd++], sizeof dirs[0], "%s", d);
    }
    const char *roots[] = {getenv("CUDA_HOME"), getenv("CUDA_PATH"), "/usr/local/cuda"};
    for (int i = 0; i < 3 && nd < 62; i++) {
        if (!roots[i]) continue;
        snprintf(dirs[nd++], sizeof dirs[0], "%s/lib64", roots[i]);
        snprintf(dirs[nd++], sizeof dirs[0], "%s/targets/x86_64-linux/lib", roots[i]);
    }
    // pip's nvidia-* wheels (nvidia/cu13/lib in CUDA 13's, nvidia/<component>/lib before).
    char patterns[8][1024];
    int np = 0;
    const char *venv = getenv("VIRTUAL_ENV"), *home = getenv("HOME");
    if (venv) snprintf(patterns[np++], sizeof patterns[0], "%s/lib/python3*/site-packages/nvidia/*/lib", venv);
    if (home) snprintf(patterns[np++], sizeof patterns[0], "%s/.local/lib/python3*/site-packages/nvidia/*/lib", home);
    snprintf(patterns[np++], sizeof patterns[0], "/opt/*/.venv/lib/python3*/site-packages/nvidia/*/lib");
    snprintf(patterns[np++], sizeof patterns[0], "/opt/*/lib/python3*/site-packages/nvidia/*/lib");
    snprintf(patterns[np++], sizeof patterns[0], "/usr/local/lib/python3*/dist-packages/nvidia/*/lib");
    snprintf(patterns[np++], sizeof patterns[0], "/usr/local/lib/python3*/site-packages/nvidia/*/lib");
    snprintf(patterns[np++], sizeof patterns[0], "/usr/lib/python3/dist-packages/nvidia/*/lib");
    for (int p = 0; p < np; p++) {
        glob_t g;
        if (glob(patterns[p], GLOB_ONLYDIR, NULL, &g) == 0) {
            for (size_t i = 0; i < g.gl_pathc && nd < 64; i++) snprintf(dirs[nd++], sizeof dirs[0], "%s", g.gl_pathv[i]);
            globfree(&g);
        }
    }
    for (int i = 0; i < nd; i++)
        if ((h = load_from(dirs[i], names, found, found_size, nvrtc))) return h;
    return NULL;
}

static int load_nvrtc_locked(void) {
    static const char *const nvrtc_names[] = {"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2", "libnvrtc.so", NULL};
    char found[4096];
    if (libnvrtc) return 0;
    void *nvrtc_library = find_library(nvrtc_names, found, sizeof found, 1);
    if (!nvrtc_library)
        return fail("NVRTC (libnvrtc.so) not found: install pip's nvidia-cuda-nvrtc or a CUDA toolkit, or set "
                    "LMDEPLOY_CUDA_LIBS to the folder holding it");
    SYM(nvrtc_library, nv, Version, "nvrtcVersion");
    SYM(nvrtc_library, nv, CreateProgram, "nvrtcCreateProgram");
    SYM(nvrtc_library, nv, CompileProgram, "nvrtcCompileProgram");
    SYM(nvrtc_library, nv, GetProgramLogSize, "nvrtcGetProgramLogSize");
    SYM(nvrtc_library, nv, GetProgramLog, "nvrtcGetProgramLog");
    SYM(nvrtc_library, nv, GetCUBINSize, "nvrtcGetCUBINSize");
    SYM(nvrtc_library, nv, GetCUBIN, "nvrtcGetCUBIN");
    SYM(nvrtc_library, nv, DestroyProgram, "nvrtcDestroyProgram");
    SYM(nvrtc_library, nv, GetErrorString, "nvrtcGetErrorString");
    int a = 0, b = 0;
    nv.Version(&a, &b);
    nvrtc_version = a * 1000 + b * 10;
    note("NVRTC: %s\n", found);
    libnvrtc = nvrtc_library;
    return 0;
}

static int open_compute_locked(void) {
    static const char *const cublas_names[] = {"libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so", NULL};
    char found[4096];
    if (load_nvrtc_locked()) return -1;
    if (!libcublas) {
        libcublas = find_library(cublas_names, found, sizeof found, 0);
        if (!libcublas)
            return fail("cuBLAS (libcublas.so) not found: install pip's nvidia-cublas or a CUDA toolkit, or set "
                        "LMDEPLOY_CUDA_LIBS to the folder holding it");
        note("cuBLAS: %s\n", found);
        SYM(libcublas, cb, Create, "cublasCreate_v2");
        SYM(libcublas, cb, GetVersion, "cublasGetVersion_v2");
        SYM(libcublas, cb, GemmEx, "cublasGemmEx");
        SYM(libcublas, cb, SetStream, "cublasSetStream_v2");
        *(void **)&cb.SetWorkspace = dlsym(libcublas, "cublasSetWorkspace_v2");
    }
    if (!blas) {
        if (ensure()) return -1;
        cublasStatus s = cb.Create(&blas);
        if (s != 0) return fail("cublasCreate failed: status %d", s);
        cb.GetVersion(blas, &cublas_version);
        if ((s = cb.SetStream(blas, stream))) return fail("cublasSetStream failed: status %d", s);
        // A workspace of our own: GEMMs captured into a CUDA graph must not allocate.
        enum { WORKSPACE = 32 << 20 };
        if (cb.SetWorkspace && cu.MemAlloc(&blas_workspace, WORKSPACE) == 0 &&
            (s = cb.SetWorkspace(blas, (void *)blas_workspace, WORKSPACE)))
            return fail("cublasSetWorkspace failed: status %d", s);
    }
    compute_opened = 1;
    return 0;
}

int ccuda_open_nvrtc(void) {
    pthread_mutex_lock(&lock);
    int rc = load_nvrtc_locked();
    pthread_mutex_unlock(&lock);
    return rc;
}

int ccuda_open_compute(void) {
    pthread_mutex_lock(&lock);
    int rc = compute_opened ? 0 : open_compute_locked();
    pthread_mutex_unlock(&lock);
    return rc;
}

int ccuda_driver_version(void) { return driver_version; }
int ccuda_device_count(void) { return device_count; }
const char *ccuda_device_name(void) { return device_name; }
int ccuda_compute_capability(void) { return cc; }
int ccuda_multiprocessors(void) { return sm_count; }
int ccuda_nvrtc_version(void) { return nvrtc_version; }
int ccuda_cublas_version(void) { return cublas_version; }

int ccuda_mem_info(size_t *free_bytes, size_t *total_bytes) {
    if (ensure()) return -1;
    return cu_check(cu.MemGetInfo(free_bytes, total_bytes), "cuMemGetInfo");
}

int ccuda_alloc(ccuda_ptr *out, size_t bytes) {
    if (ensure()) return -1;
    return cu_check(cu.MemAlloc(out, bytes ? bytes : 1), "cuMemAlloc");
}

int ccuda_free(ccuda_ptr p) {
    if (ensure()) return -1;
    return cu_check(cu.MemFree(p), "cuMemFree");
}

int ccuda_memset(ccuda_ptr p, size_t bytes) {
    if (ensure()) return -1;
    return cu_check(cu.MemsetD8(p, 0, bytes), "cuMemsetD8");
}

int ccuda_host_alloc(void **out, size_t bytes) {
    if (ensure()) return -1;
    return cu_check(cu.MemAllocHost(out, bytes ? bytes : 1), "cuMemAllocHost");
}

int ccuda_host_free(void *p) {
    if (ensure()) return -1;
    return cu_check(cu.MemFreeHost(p), "cuMemFreeHost");
}

int ccuda_upload(ccuda_ptr dst, const void *src, size_t bytes) {
    if (ensure()) return -1;
    return bytes ? cu_check(cu.MemcpyHtoD(dst, src, bytes), "cuMemcpyHtoD") : 0;
}

int ccuda_upload_async(ccuda_ptr dst, const void *pinned_src, size_t bytes) {
    if (ensure()) return -1;
    return bytes ? cu_check(cu.MemcpyHtoDAsync(dst, pinned_src, bytes, stream), "cuMemcpyHtoDAsync") : 0;
}

int ccuda_download(void *dst, ccuda_ptr src, size_t bytes) {
    if (ensure()) return -1;
    return bytes ? cu_check(cu.MemcpyDtoH(dst, src, bytes), "cuMemcpyDtoH (a kernel before it may have failed)") : 0;
}

int ccuda_copy(ccuda_ptr dst, ccuda_ptr src, size_t bytes) {
    if (ensure()) return -1;
    return bytes ? cu_check(cu.MemcpyDtoD(dst, src, bytes), "cuMemcpyDtoD") : 0;
}

int ccuda_sync(void) {
    if (ensure()) return -1;
    return cu_check(cu.CtxSynchronize(), "cuCtxSynchronize (a kernel failed)");
}

int ccuda_compile(const char *source, const char *name, int arch, void **cubin, size_t *size) {
    if (!libnvrtc) return fail("NVRTC is not loaded (ccuda_open_nvrtc was not called or failed)");
    nvrtcProgram prog;
    nvrtcResult r = nv.CreateProgram(&prog, source, name, 0, NULL, NULL);
    if (r) return fail("nvrtcCreateProgram: %s", nv.GetErrorString(r));
    char archopt[64];
    snprintf(archopt, sizeof archopt, "--gpu-architecture=sm_%d", arch);
    const char *opts[] = {archopt, "--std=c++17", "-default-device", "--extra-device-vectorization"};
    r = nv.CompileProgram(prog, 4, opts);
    if (r) {
        size_t n = 0;
        nv.GetProgramLogSize(prog, &n);
        char *log = malloc(n + 1);
        log[0] = 0;
        nv.GetProgramLog(prog, log);
        fail("NVRTC could not compile %s for sm_%d: %s\n%.6000s", name, arch, nv.GetErrorString(r), log);
        free(log);
        nv.DestroyProgram(&prog);
        return -1;
    }
    size_t n = 0;
    nv.GetCUBINSize(prog, &n);
    char *image = malloc(n);
    nv.GetCUBIN(prog, image);
    nv.DestroyProgram(&prog);
    *cubin = image;
    *size = n;
    return 0;
}

int ccuda_load_module(const void *image, void **module) {
    if (ensure()) return -1;
    return cu_check(cu.ModuleLoadData((CUmodule *)module, image), "cuModuleLoadData");
}

int ccuda_get_function(void *module, const char *name, void **function) {
    if (ensure()) return -1;
    char what[256];
    snprintf(what, sizeof what, "cuModuleGetFunction(%s)", name);
    return cu_check(cu.ModuleGetFunction((CUfunction *)function, module, name), what);
}

int ccuda_set_max_shared(void *function, int bytes) {
    if (ensure()) return -1;
    return cu_check(cu.FuncSetAttribute(function, FUNC_ATTR_MAX_DYNAMIC_SHARED, bytes), "cuFuncSetAttribute");
}

int ccuda_launch(void *function, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                 unsigned shared_bytes, void **params) {
    if (ensure()) return -1;
    if (gx == 0 || gy == 0 || gz == 0) return 0;
    if (pdl) {
        LaunchAttribute attr = {.id = LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION};
        attr.value.value = 1;
        LaunchConfig config = {{gx, gy, gz}, {bx, by, bz}, shared_bytes, stream, &attr, 1};
        return cu_check(cu.LaunchKernelEx(&config, function, params, NULL), "cuLaunchKernelEx");
    }
    return cu_check(cu.LaunchKernel(function, gx, gy, gz, bx, by, bz, shared_bytes, stream, params, NULL), "cuLaunchKernel");
}

static int gemm_f16(ccuda_ptr w, ccuda_ptr x, ccuda_ptr out, int out_type, int m, int n, int k, int accumulate) {
    if (ensure()) return -1;
    if (!blas) return fail("cuBLAS is not loaded");
    // Column-major view: outᵀ[n][m] = W[n][k] · xᵀ[k][m], W stored row-major = (k × n)ᵀ.
    float alpha = 1, beta = accumulate ? 1 : 0;
    pthread_mutex_lock(&blas_lock);
    cublasStatus s = cb.GemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &alpha, (const void *)w, CUDA_R_16F, k,
                               (const void *)x, CUDA_R_16F, k, &beta, (void *)out, out_type, n, CUBLAS_COMPUTE_32F,
                               CUBLAS_GEMM_DEFAULT);
    pthread_mutex_unlock(&blas_lock);
    return s ? fail("cublasGemmEx (m %d, n %d, k %d) failed: status %d", m, n, k, s) : 0;
}

int ccuda_gemm_f16(ccuda_ptr w, ccuda_ptr x, ccuda_ptr out, int m, int n, int k, int accumulate) {
    return gemm_f16(w, x, out, CUDA_R_32F, m, n, k, accumulate);
}

int ccuda_gemm_f16_out16(ccuda_ptr w, ccuda_ptr x, ccuda_ptr out_h, int m, int n, int k) {
    return gemm_f16(w, x, out_h, CUDA_R_16F, m, n, k, 0);
}

int ccuda_capture_begin(void) {
    if (ensure()) return -1;
    return cu_check(cu.StreamBeginCapture(stream, 2 /* CU_STREAM_CAPTURE_MODE_RELAXED */), "cuStreamBeginCapture");
}

int ccuda_capture_end(void **exec) {
    if (ensure()) return -1;
    CUgraph graph = NULL;
    if (cu_check(cu.StreamEndCapture(stream, &graph), "cuStreamEndCapture (an op could not be captured)")) return -1;
    if (!exec) {   // capture abandoned
        if (graph) cu.GraphDestroy(graph);
        return 0;
    }
    CUresult r = cu.GraphInstantiate((CUgraphExec *)exec, graph, 0);
    cu.GraphDestroy(graph);
    return cu_check(r, "cuGraphInstantiateWithFlags");
}

int ccuda_graph_launch(void *exec) {
    if (ensure()) return -1;
    return cu_check(cu.GraphLaunch(exec, stream), "cuGraphLaunch");
}

int ccuda_graph_destroy(void *exec) {
    if (ensure()) return -1;
    return exec ? cu_check(cu.GraphExecDestroy(exec), "cuGraphExecDestroy") : 0;
}

int ccuda_event_create(void **event) {
    if (ensure()) return -1;
    return cu_check(cu.EventCreate((CUevent *)event, 0), "cuEventCreate");
}

int ccuda_event_record(void *event) {
    if (ensure()) return -1;
    return cu_check(cu.EventRecord(event, stream), "cuEventRecord");
}

int ccuda_event_elapsed(void *start, void *end, float *ms) {
    if (ensure()) return -1;
    if (cu_check(cu.EventSynchronize(end), "cuEventSynchronize")) return -1;
    return cu_check(cu.EventElapsedTime(ms, start, end), "cuEventElapsedTime");
}
