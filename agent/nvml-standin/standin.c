/*
 * An NVML stand-in for tests: a shared library exporting the NVML functions fleetgate calls,
 * simulating GPUs without a driver. Loaded through nvml-wrapper's library-path option.
 *
 * Configuration (environment, read at nvmlInit):
 *   NVML_STANDIN_DEVICES      number of GPUs (default 2; 0 simulates a host without GPUs)
 *   NVML_STANDIN_NAME         product name (default "NVIDIA H100 80GB HBM3")
 *   NVML_STANDIN_MEMORY_MIB   memory per GPU in MiB (default 81559)
 *   NVML_STANDIN_USED_MIB     memory in use by others per GPU in MiB (default 1024)
 *   NVML_STANDIN_PROCESS_MIB  GPU memory of the calling process per GPU in MiB (default 512)
 *   NVML_STANDIN_CONTROL      a control file, re-read whenever it changes (size or mtime):
 *       fail <gpu> <k>   the next k memory reads of <gpu> fail (NVML_ERROR_UNKNOWN)
 *       lost <gpu>       <gpu> has fallen off the bus: every call on it fails (GPU_IS_LOST)
 *       back <gpu>       <gpu> answers again
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NVML_SUCCESS 0
#define NVML_ERROR_UNINITIALIZED 1
#define NVML_ERROR_INVALID_ARGUMENT 2
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_ERROR_GPU_IS_LOST 15
#define NVML_ERROR_UNKNOWN 999
#define MAX_GPUS 16

typedef struct {
    unsigned index;
    int lost;
    long fail_reads;
} standin_gpu;

typedef standin_gpu *nvmlDevice_t;

typedef struct {
    unsigned int version;
    unsigned long long total, reserved, free, used;
} nvmlMemory_v2_t;

typedef struct {
    unsigned long long total, free, used;
} nvmlMemory_t;

typedef struct {
    char busIdLegacy[16];
    unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;

typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId, computeInstanceId;
} nvmlProcessInfo_t;

static standin_gpu gpus[MAX_GPUS];
static unsigned gpu_count;
static int initialised;
static char name[96] = "NVIDIA H100 80GB HBM3";
static unsigned long long memory_bytes = 81559ULL << 20;
static unsigned long long others_bytes = 1024ULL << 20;
static unsigned long long process_bytes = 512ULL << 20;
static struct stat control_seen;

static unsigned long long env_mib(const char *key, unsigned long long fallback) {
    const char *v = getenv(key);
    return v && *v ? strtoull(v, NULL, 10) << 20 : fallback;
}

static void read_control(void) {
    const char *path = getenv("NVML_STANDIN_CONTROL");
    struct stat st;
    if (!path || stat(path, &st) != 0) return;
    if (st.st_size == control_seen.st_size && st.st_mtim.tv_sec == control_seen.st_mtim.tv_sec &&
        st.st_mtim.tv_nsec == control_seen.st_mtim.tv_nsec)
        return;
    control_seen = st;
    FILE *f = fopen(path, "r");
    if (!f) return;
    char verb[16];
    unsigned gpu;
    long k;
    char line[128];
    while (fgets(line, sizeof line, f)) {
        int n = sscanf(line, "%15s %u %ld", verb, &gpu, &k);
        if (n < 2 || gpu >= gpu_count) continue;
        if (strcmp(verb, "fail") == 0 && n == 3) gpus[gpu].fail_reads = k;
        else if (strcmp(verb, "lost") == 0) gpus[gpu].lost = 1;
        else if (strcmp(verb, "back") == 0) gpus[gpu].lost = 0;
    }
    fclose(f);
}

int nvmlInit_v2(void) {
    const char *devices = getenv("NVML_STANDIN_DEVICES");
    gpu_count = devices && *devices ? (unsigned)strtoul(devices, NULL, 10) : 2;
    if (gpu_count > MAX_GPUS) gpu_count = MAX_GPUS;
    const char *n = getenv("NVML_STANDIN_NAME");
    if (n && *n) snprintf(name, sizeof name, "%s", n);
    memory_bytes = env_mib("NVML_STANDIN_MEMORY_MIB", memory_bytes);
    others_bytes = env_mib("NVML_STANDIN_USED_MIB", others_bytes);
    process_bytes = env_mib("NVML_STANDIN_PROCESS_MIB", process_bytes);
    for (unsigned i = 0; i < MAX_GPUS; i++) {
        gpus[i].index = i;
        gpus[i].lost = 0;
        gpus[i].fail_reads = 0;
    }
    memset(&control_seen, 0, sizeof control_seen);
    initialised = 1;
    return NVML_SUCCESS;
}
int nvmlInit(void) { return nvmlInit_v2(); }
int nvmlInitWithFlags(unsigned int flags) { (void)flags; return nvmlInit_v2(); }
int nvmlShutdown(void) { initialised = 0; return NVML_SUCCESS; }

const char *nvmlErrorString(int result) {
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    default: return "Unknown Error";
    }
}

static int check(nvmlDevice_t dev) {
    if (!initialised) return NVML_ERROR_UNINITIALIZED;
    if (!dev) return NVML_ERROR_INVALID_ARGUMENT;
    read_control();
    return dev->lost ? NVML_ERROR_GPU_IS_LOST : NVML_SUCCESS;
}

static int copy_string(char *out, unsigned len, const char *value) {
    if (!out || strlen(value) + 1 > len) return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(out, value, strlen(value) + 1);
    return NVML_SUCCESS;
}

int nvmlDeviceGetCount_v2(unsigned int *count) {
    if (!initialised) return NVML_ERROR_UNINITIALIZED;
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    *count = gpu_count;
    return NVML_SUCCESS;
}
int nvmlDeviceGetCount(unsigned int *count) { return nvmlDeviceGetCount_v2(count); }

int nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    if (!initialised) return NVML_ERROR_UNINITIALIZED;
    if (!device || index >= gpu_count) return NVML_ERROR_INVALID_ARGUMENT;
    *device = &gpus[index];
    return NVML_SUCCESS;
}
int nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device) {
    return nvmlDeviceGetHandleByIndex_v2(index, device);
}

int nvmlDeviceGetIndex(nvmlDevice_t dev, unsigned int *index) {
    int r = check(dev);
    if (r) return r;
    *index = dev->index;
    return NVML_SUCCESS;
}

int nvmlDeviceGetName(nvmlDevice_t dev, char *out, unsigned int len) {
    int r = check(dev);
    return r ? r : copy_string(out, len, name);
}

int nvmlDeviceGetUUID(nvmlDevice_t dev, char *out, unsigned int len) {
    int r = check(dev);
    if (r) return r;
    char uuid[80];
    snprintf(uuid, sizeof uuid, "GPU-5eed0000-0000-4000-8000-%012u", dev->index);
    return copy_string(out, len, uuid);
}

int nvmlDeviceGetPciInfo_v3(nvmlDevice_t dev, nvmlPciInfo_t *pci) {
    int r = check(dev);
    if (r) return r;
    memset(pci, 0, sizeof *pci);
    pci->bus = 0x10 + dev->index;
    pci->pciDeviceId = 0x233010de;
    snprintf(pci->busId, sizeof pci->busId, "00000000:%02X:00.0", pci->bus);
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "0000:%02X:00.0", pci->bus);
    return NVML_SUCCESS;
}

static int memory(nvmlDevice_t dev, unsigned long long *total, unsigned long long *free_,
                  unsigned long long *used) {
    int r = check(dev);
    if (r) return r;
    if (dev->fail_reads > 0) {
        dev->fail_reads--;
        return NVML_ERROR_UNKNOWN;
    }
    *total = memory_bytes;
    *used = others_bytes + process_bytes;
    *free_ = memory_bytes > *used ? memory_bytes - *used : 0;
    return NVML_SUCCESS;
}

int nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t dev, nvmlMemory_v2_t *m) {
    if (!m) return NVML_ERROR_INVALID_ARGUMENT;
    m->reserved = 0;
    return memory(dev, &m->total, &m->free, &m->used);
}

int nvmlDeviceGetMemoryInfo(nvmlDevice_t dev, nvmlMemory_t *m) {
    if (!m) return NVML_ERROR_INVALID_ARGUMENT;
    return memory(dev, &m->total, &m->free, &m->used);
}

int nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t dev, unsigned int *count,
                                            nvmlProcessInfo_t *infos) {
    int r = check(dev);
    if (r) return r;
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    if (*count < 1 || !infos) {
        *count = 1;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    infos[0].pid = (unsigned)getpid();
    infos[0].usedGpuMemory = process_bytes;
    infos[0].gpuInstanceId = 0xFFFFFFFF;
    infos[0].computeInstanceId = 0xFFFFFFFF;
    *count = 1;
    return NVML_SUCCESS;
}

int nvmlDeviceGetGraphicsRunningProcesses_v3(nvmlDevice_t dev, unsigned int *count,
                                             nvmlProcessInfo_t *infos) {
    (void)infos;
    int r = check(dev);
    if (r) return r;
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    *count = 0;
    return NVML_SUCCESS;
}

int nvmlSystemGetDriverVersion(char *out, unsigned int len) {
    if (!initialised) return NVML_ERROR_UNINITIALIZED;
    return copy_string(out, len, "550.54.15");
}

int nvmlSystemGetCudaDriverVersion_v2(int *version) {
    if (!initialised) return NVML_ERROR_UNINITIALIZED;
    if (!version) return NVML_ERROR_INVALID_ARGUMENT;
    *version = 12040;
    return NVML_SUCCESS;
}
int nvmlSystemGetCudaDriverVersion(int *version) { return nvmlSystemGetCudaDriverVersion_v2(version); }
