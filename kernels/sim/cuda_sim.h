// cuda-sim: the CUDA execution model for a host C++20 compiler, so that the project's own
// kernels/*.cu sources run unchanged on the CPU (compiled with -DMULTIMAT_SIM by build.rs).
//
// Model (see cuda_sim.cpp for the scheduler):
// - A launch runs every block of the grid; blocks are spread over a few OS threads, and the
//   threads of one block run as fibers on ONE OS thread, scheduled cooperatively in a fixed
//   order, so a launch is deterministic (except float atomics across blocks, as on a GPU).
// - A fiber runs until it reaches a synchronisation point (__syncthreads, __syncwarp, a
//   shuffle or vote) or returns. __syncthreads releases when every thread of the block has
//   arrived at the same call site; warp operations release when every non-exited lane named
//   in the mask has arrived. A barrier that can never release (a thread exited while others
//   wait at __syncthreads, or threads wait at different barriers) ends the launch with
//   MULTIMAT_SIM_DEADLOCK and a message naming the kernel, block, threads and source lines.
// - `__shared__` is a function-local `static thread_local`: one copy per OS thread, hence one
//   per running block. Dynamic shared memory is declared with MULTIMAT_DYNAMIC_SHARED (the
//   same macro expands to `extern __shared__` under NVRTC) and is poisoned with 0xFF bytes
//   (NaN as float) at every block start, so reading it before writing shows.
// - A shuffle reading a lane that does not take part (not in the mask, beyond a partial last
//   warp, or exited) returns a poison value (all bits set: NaN as float), because CUDA leaves
//   that value undefined.
// - Device memory is host memory: a device pointer argument is the 64-bit address.
#pragma once

#if !defined(MULTIMAT_SIM)
#error "cuda_sim.h is the CPU simulator's header: compile with -DMULTIMAT_SIM"
#endif

#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <source_location>
#include <tuple>
#include <type_traits>
#include <utility>

// ---------------------------------------------------------------------------------------------
// Keywords. NVRTC knows these; g++ must see ordinary C++. No library header may be included after
// this point (libstdc++ spells attributes like __noinline__ itself).
#define __global__ __attribute__((visibility("hidden")))
#define __device__
#define __host__
#define __noinline__ __attribute__((noinline))
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __constant__
#define __shared__ static thread_local
#define __align__(n) alignas(n)
// g++ spells __restrict__ itself.

// INFINITY and NAN are undefined under NVRTC (no libc headers there): make the simulator refuse
// them too, so a kernel that uses them fails here first. common.cuh has mm_inf().
#undef INFINITY
#undef NAN

// ---------------------------------------------------------------------------------------------
// Launch configuration, shared with Rust (`engine::backend::sim::SimLaunch`, repr(C)).
extern "C" {
typedef struct MultimatSimLaunch {
    unsigned grid[3];
    unsigned block[3];
    unsigned shared_bytes;
} MultimatSimLaunch;

// The message for the last failed launch on the calling OS thread ("" if none).
const char* multimat_sim_last_error(void);
}

// Error codes returned by the multimat_sim_<kernel> entry points (0 = success).
#define MULTIMAT_SIM_OK 0
#define MULTIMAT_SIM_INVALID_CONFIG 1
#define MULTIMAT_SIM_DEADLOCK 2
#define MULTIMAT_SIM_INVALID_WARP_OP 3
#define MULTIMAT_SIM_OUT_OF_RESOURCES 4
#define MULTIMAT_SIM_INTERNAL 5

// ---------------------------------------------------------------------------------------------
// Built-in vector types (the subset kernels here use) and the index variables.
struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return uint3{x, y, z}; }
};
struct alignas(8) float2 {
    float x, y;
};
struct alignas(16) float4 {
    float x, y, z, w;
};
struct alignas(8) int2 {
    int x, y;
};
struct alignas(16) int4 {
    int x, y, z, w;
};
inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline int2 make_int2(int x, int y) { return int2{x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return int4{x, y, z, w}; }

namespace multimat_sim {
// The running fiber's indices. Thread-local: blocks run on several OS threads at once; within
// one OS thread the scheduler rewrites thread_idx before resuming each fiber.
inline thread_local uint3 thread_idx{0, 0, 0};
inline thread_local uint3 block_idx{0, 0, 0};
inline thread_local dim3 block_dim{1, 1, 1};
inline thread_local dim3 grid_dim{1, 1, 1};
inline thread_local unsigned char* dynamic_shared_base = nullptr;
}  // namespace multimat_sim

#define threadIdx (::multimat_sim::thread_idx)
#define blockIdx (::multimat_sim::block_idx)
#define blockDim (::multimat_sim::block_dim)
#define gridDim (::multimat_sim::grid_dim)
constexpr int warpSize = 32;

// Dynamic shared memory: `MULTIMAT_DYNAMIC_SHARED(float, smem);` inside a kernel gives
// `float* smem` over the launch's shared_bytes (16-byte aligned).
#define MULTIMAT_DYNAMIC_SHARED(type, name) \
    type* name = reinterpret_cast<type*>(::multimat_sim::dynamic_shared_base)

// ---------------------------------------------------------------------------------------------
// Runtime entry points (cuda_sim.cpp).
namespace multimat_sim {
enum class WarpOp : int { Sync = 0, ShflIdx, ShflUp, ShflDown, ShflXor, Vote };

void block_barrier(const std::source_location& site);
// One warp collective: this lane contributes `bits`; returns the bits it reads (shuffles) or
// the ballot of the participating lanes (Vote, Sync).
uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t bits, int arg, int width,
                         const std::source_location& site);
unsigned lanes_alive_mask();

using BlockBody = void (*)(void* kernel_and_args);
int run_grid(const char* kernel, const MultimatSimLaunch* cfg, BlockBody body, void* ctx);
void set_error(int code, const char* kernel, const char* message);

template <class T>
inline uint64_t to_bits(T v) {
    static_assert(sizeof(T) == 4 || sizeof(T) == 8, "shuffles move 32- or 64-bit values");
    uint64_t b = 0;
    std::memcpy(&b, &v, sizeof(T));
    return b;
}
template <class T>
inline T from_bits(uint64_t b) {
    T v;
    std::memcpy(&v, &b, sizeof(T));
    return v;
}

// Unpack cuLaunchKernel-style `void** params` into the kernel's argument types and run the grid.
template <class... Args, std::size_t... I>
std::tuple<std::decay_t<Args>...> unpack_params(void** params, std::index_sequence<I...>) {
    std::tuple<std::decay_t<Args>...> args;
    ((std::memcpy(&std::get<I>(args), params[I], sizeof(std::tuple_element_t<I, std::tuple<std::decay_t<Args>...>>))), ...);
    return args;
}

template <class... Args>
int launch_kernel(const char* name, void (*kernel)(Args...), const MultimatSimLaunch* cfg, void** params) {
    static_assert((std::is_trivially_copyable_v<std::decay_t<Args>> && ...), "kernel arguments must be trivially copyable");
    if (cfg == nullptr || (sizeof...(Args) > 0 && params == nullptr)) {
        set_error(MULTIMAT_SIM_INVALID_CONFIG, name, "null launch configuration or parameter array");
        return MULTIMAT_SIM_INVALID_CONFIG;
    }
    for (std::size_t i = 0; i < sizeof...(Args); ++i) {
        if (params[i] == nullptr) {
            set_error(MULTIMAT_SIM_INVALID_CONFIG, name, "a kernel parameter pointer is null");
            return MULTIMAT_SIM_INVALID_CONFIG;
        }
    }
    struct Ctx {
        void (*kernel)(Args...);
        std::tuple<std::decay_t<Args>...> args;
    } ctx{kernel, unpack_params<Args...>(params, std::index_sequence_for<Args...>{})};
    BlockBody body = [](void* p) {
        Ctx* c = static_cast<Ctx*>(p);
        std::apply(c->kernel, c->args);
    };
    return run_grid(name, cfg, body, &ctx);
}
}  // namespace multimat_sim

// After the kernels of a .cu file: MULTIMAT_EXPORT(name) for each. Defines
//   extern "C" int multimat_sim_<name>(const MultimatSimLaunch*, void** params)
//   extern "C" int multimat_sim_<name>_arity(void)   (the number of kernel parameters)
#define MULTIMAT_EXPORT(name)                                                                  \
    extern "C" int multimat_sim_##name(const MultimatSimLaunch* cfg, void** params) {          \
        return ::multimat_sim::launch_kernel(#name, &name, cfg, params);                      \
    }                                                                                          \
    extern "C" int multimat_sim_##name##_arity(void) {                                         \
        return ::multimat_sim::arity_of(&name);                                                \
    }

namespace multimat_sim {
template <class... Args>
constexpr int arity_of(void (*)(Args...)) {
    return static_cast<int>(sizeof...(Args));
}
}  // namespace multimat_sim

// ---------------------------------------------------------------------------------------------
// Synchronisation, warp shuffles and votes.
inline void __syncthreads(const std::source_location site = std::source_location::current()) {
    ::multimat_sim::block_barrier(site);
}
inline void __syncwarp(unsigned mask = 0xffffffffu, const std::source_location site = std::source_location::current()) {
    ::multimat_sim::warp_collective(::multimat_sim::WarpOp::Sync, mask, 0, 0, warpSize, site);
}
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_signal_fence(std::memory_order_seq_cst); }

template <class T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize,
                     const std::source_location site = std::source_location::current()) {
    using namespace ::multimat_sim;
    return from_bits<T>(warp_collective(WarpOp::ShflIdx, mask, to_bits(var), src_lane, width, site));
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                        const std::source_location site = std::source_location::current()) {
    using namespace ::multimat_sim;
    return from_bits<T>(warp_collective(WarpOp::ShflUp, mask, to_bits(var), static_cast<int>(delta), width, site));
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                          const std::source_location site = std::source_location::current()) {
    using namespace ::multimat_sim;
    return from_bits<T>(warp_collective(WarpOp::ShflDown, mask, to_bits(var), static_cast<int>(delta), width, site));
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize,
                         const std::source_location site = std::source_location::current()) {
    using namespace ::multimat_sim;
    return from_bits<T>(warp_collective(WarpOp::ShflXor, mask, to_bits(var), lane_mask, width, site));
}
inline unsigned __ballot_sync(unsigned mask, int predicate, const std::source_location site = std::source_location::current()) {
    using namespace ::multimat_sim;
    return static_cast<unsigned>(warp_collective(WarpOp::Vote, mask, predicate != 0, 0, warpSize, site));  // low word
}
inline int __any_sync(unsigned mask, int predicate, const std::source_location site = std::source_location::current()) {
    return __ballot_sync(mask, predicate, site) != 0;
}
inline int __all_sync(unsigned mask, int predicate, const std::source_location site = std::source_location::current()) {
    // A vote returns the ballot in the low word and the set of lanes that took part in the high
    // word: all lanes voted true when the two agree.
    using namespace ::multimat_sim;
    uint64_t r = warp_collective(WarpOp::Vote, mask, predicate != 0, 0, warpSize, site);
    return static_cast<unsigned>(r) == static_cast<unsigned>(r >> 32);
}
// Lanes of this warp that exist and have not exited.
inline unsigned __activemask() { return ::multimat_sim::lanes_alive_mask(); }

// ---------------------------------------------------------------------------------------------
// Bit intrinsics.
inline int __popc(unsigned x) { return std::popcount(x); }
inline int __popcll(unsigned long long x) { return std::popcount(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline int __clz(int x) { return std::countl_zero(static_cast<unsigned>(x)); }
inline int __clzll(long long x) { return std::countl_zero(static_cast<unsigned long long>(x)); }
inline unsigned __brev(unsigned x) {
    x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
    x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
    x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
    x = ((x >> 8) & 0x00ff00ffu) | ((x & 0x00ff00ffu) << 8);
    return (x >> 16) | (x << 16);
}

// ---------------------------------------------------------------------------------------------
// Atomics: real atomics, because blocks run on several OS threads at once.
template <class T>
inline T multimat_sim_atomic_add(T* address, T val) {
    return std::atomic_ref<T>(*address).fetch_add(val, std::memory_order_relaxed);
}
inline int atomicAdd(int* a, int v) { return multimat_sim_atomic_add(a, v); }
inline unsigned atomicAdd(unsigned* a, unsigned v) { return multimat_sim_atomic_add(a, v); }
inline unsigned long long atomicAdd(unsigned long long* a, unsigned long long v) { return multimat_sim_atomic_add(a, v); }
inline float atomicAdd(float* a, float v) { return multimat_sim_atomic_add(a, v); }
inline double atomicAdd(double* a, double v) { return multimat_sim_atomic_add(a, v); }
inline int atomicSub(int* a, int v) { return std::atomic_ref<int>(*a).fetch_sub(v, std::memory_order_relaxed); }
inline unsigned atomicSub(unsigned* a, unsigned v) { return std::atomic_ref<unsigned>(*a).fetch_sub(v, std::memory_order_relaxed); }
template <class T>
inline T multimat_sim_atomic_max(T* address, T val) {
    std::atomic_ref<T> r(*address);
    T old = r.load(std::memory_order_relaxed);
    while (old < val && !r.compare_exchange_weak(old, val, std::memory_order_relaxed)) {
    }
    return old;
}
template <class T>
inline T multimat_sim_atomic_min(T* address, T val) {
    std::atomic_ref<T> r(*address);
    T old = r.load(std::memory_order_relaxed);
    while (val < old && !r.compare_exchange_weak(old, val, std::memory_order_relaxed)) {
    }
    return old;
}
inline int atomicMax(int* a, int v) { return multimat_sim_atomic_max(a, v); }
inline unsigned atomicMax(unsigned* a, unsigned v) { return multimat_sim_atomic_max(a, v); }
inline int atomicMin(int* a, int v) { return multimat_sim_atomic_min(a, v); }
inline unsigned atomicMin(unsigned* a, unsigned v) { return multimat_sim_atomic_min(a, v); }
template <class T>
inline T multimat_sim_atomic_cas(T* address, T compare, T val) {
    std::atomic_ref<T>(*address).compare_exchange_strong(compare, val, std::memory_order_relaxed);
    return compare;  // holds the old value whether or not the exchange happened
}
inline int atomicCAS(int* a, int c, int v) { return multimat_sim_atomic_cas(a, c, v); }
inline unsigned atomicCAS(unsigned* a, unsigned c, unsigned v) { return multimat_sim_atomic_cas(a, c, v); }
inline unsigned long long atomicCAS(unsigned long long* a, unsigned long long c, unsigned long long v) {
    return multimat_sim_atomic_cas(a, c, v);
}
inline int atomicExch(int* a, int v) { return std::atomic_ref<int>(*a).exchange(v, std::memory_order_relaxed); }
inline unsigned atomicExch(unsigned* a, unsigned v) { return std::atomic_ref<unsigned>(*a).exchange(v, std::memory_order_relaxed); }
inline float atomicExch(float* a, float v) { return std::atomic_ref<float>(*a).exchange(v, std::memory_order_relaxed); }

// ---------------------------------------------------------------------------------------------
// Math. expf, logf, sqrtf, erff, erfcf, tanhf, fmaxf, fminf, fabsf, … come from <cmath> in the
// global namespace as in CUDA. The fast intrinsics are the accurate functions here; kernels must
// tolerate either (they differ by a few ulp on a GPU).
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __tanhf(float x) { return tanhf(x); }
inline float __fdividef(float x, float y) { return x / y; }
inline float fdividef(float x, float y) { return x / y; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : (x == x ? x : 0.0f)); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline int __float2int_rn(float x) { return static_cast<int>(nearbyintf(x)); }
inline int __float2int_rz(float x) { return static_cast<int>(x); }
inline float __int2float_rn(int x) { return static_cast<float>(x); }
inline float __int_as_float(int x) { return std::bit_cast<float>(x); }
inline int __float_as_int(float x) { return std::bit_cast<int>(x); }
inline float __uint_as_float(unsigned x) { return std::bit_cast<float>(x); }
inline unsigned __float_as_uint(float x) { return std::bit_cast<unsigned>(x); }
inline double __longlong_as_double(long long x) { return std::bit_cast<double>(x); }
inline long long __double_as_longlong(double x) { return std::bit_cast<long long>(x); }
// CUDA's integer and float min/max overloads.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }

// Read-only cache loads are plain loads here.
template <class T>
inline T __ldg(const T* p) { return *p; }
