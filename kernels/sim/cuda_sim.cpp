// cuda-sim runtime: fibers, the per-block scheduler with its barriers, warp collectives, and the
// pool of OS threads that runs the blocks of a grid. The model is described in cuda_sim.h.
//
// Fibers switch with a dozen instructions on x86-64 (callee-saved registers + the floating-point
// control words, no signal-mask system call as swapcontext makes); other targets, or a build
// with -DMULTIMAT_SIM_UCONTEXT, use POSIX ucontext. Stacks are mmap'd once per OS thread with a
// guard page below each and reused: a thread that finishes without waiting hands its stack to
// the next, so a barrier-free kernel touches one stack whatever the block size.
// System headers first: cuda_sim.h defines CUDA keywords (__noinline__, __host__, …) as macros
// that would break a library header included after it.
#include <sys/mman.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__) && !defined(MULTIMAT_SIM_UCONTEXT)
#define MULTIMAT_SIM_ASM_SWITCH 1
#else
#include <ucontext.h>
#endif

#include "cuda_sim.h"

namespace multimat_sim {
namespace {

// ---------------------------------------------------------------------------------------------
// Contexts.
#if defined(MULTIMAT_SIM_ASM_SWITCH)
extern "C" void multimat_sim_switch(void** save_sp, void* load_sp);
extern "C" void multimat_sim_fiber_entry();
// multimat_sim_switch(save, load): push the callee-saved registers, store rsp in *save, load rsp
// from `load`, pop the same and return into the other context. The MXCSR and x87 control words
// are not switched: every fiber and the scheduler share one floating-point environment (kernels
// never change rounding modes). multimat_sim_fiber_entry: a new fiber's first return lands here
// with the entry function in r13 and its argument in r12 (placed by Context::start), rsp 16-byte
// aligned.
asm(R"(
    .text
    .p2align 4
    .globl multimat_sim_switch
    .hidden multimat_sim_switch
    .type multimat_sim_switch,@function
multimat_sim_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size multimat_sim_switch,.-multimat_sim_switch

    .p2align 4
    .globl multimat_sim_fiber_entry
    .hidden multimat_sim_fiber_entry
    .type multimat_sim_fiber_entry,@function
multimat_sim_fiber_entry:
    movq %r12, %rdi
    callq *%r13
    ud2
    .size multimat_sim_fiber_entry,.-multimat_sim_fiber_entry
)");

struct Context {
    void* sp = nullptr;
    void start(unsigned char* stack_lo, std::size_t size, void (*fn)(void*), void* arg) {
        uintptr_t top = (reinterpret_cast<uintptr_t>(stack_lo) + size) & ~uintptr_t(15);
        // Popped by the first switch into the fiber: r15 r14 r13 r12 rbx rbp, then the return
        // address; afterwards rsp = top - 16, aligned as a call site needs.
        auto* frame = reinterpret_cast<uint64_t*>(top - 16 - 7 * 8);
        frame[0] = 0;                                      // r15
        frame[1] = 0;                                      // r14
        frame[2] = reinterpret_cast<uint64_t>(fn);         // r13
        frame[3] = reinterpret_cast<uint64_t>(arg);        // r12
        frame[4] = 0;                                      // rbx
        frame[5] = 0;                                      // rbp
        frame[6] = reinterpret_cast<uint64_t>(&multimat_sim_fiber_entry);
        sp = frame;
    }
};
inline void switch_context(Context& from, Context& to) { multimat_sim_switch(&from.sp, to.sp); }
#else
struct Context {
    ucontext_t uc;
    static void trampoline(unsigned hi, unsigned lo, unsigned fhi, unsigned flo) {
        auto arg = reinterpret_cast<void*>((uint64_t(hi) << 32) | lo);
        auto fn = reinterpret_cast<void (*)(void*)>((uint64_t(fhi) << 32) | flo);
        fn(arg);
        std::abort();  // fibers never return: they switch away when their thread exits
    }
    void start(unsigned char* stack_lo, std::size_t size, void (*fn)(void*), void* arg) {
        getcontext(&uc);
        uc.uc_stack.ss_sp = stack_lo;
        uc.uc_stack.ss_size = size;
        uc.uc_link = nullptr;
        uint64_t a = reinterpret_cast<uint64_t>(arg), f = reinterpret_cast<uint64_t>(fn);
        makecontext(&uc, reinterpret_cast<void (*)()>(&trampoline), 4, unsigned(a >> 32), unsigned(a), unsigned(f >> 32),
                    unsigned(f));
    }
};
inline void switch_context(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
#endif

// ---------------------------------------------------------------------------------------------
// Fiber stacks: reserved lazily (MAP_NORESERVE), a PROT_NONE guard page below each.
std::size_t stack_bytes() {
    static const std::size_t bytes = [] {
        std::size_t kib = 256;
        if (const char* s = std::getenv("MULTIMAT_SIM_STACK_KIB")) {
            long v = std::strtol(s, nullptr, 10);
            if (v >= 16 && v <= 65536) kib = static_cast<std::size_t>(v);
        }
        return kib * 1024;
    }();
    return bytes;
}

struct StackPool {
    std::vector<unsigned char*> all, free_list;
    std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    unsigned char* acquire() {
        if (!free_list.empty()) {
            unsigned char* s = free_list.back();
            free_list.pop_back();
            return s;
        }
        std::size_t total = stack_bytes() + page;
        void* p = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) return nullptr;
        mprotect(p, page, PROT_NONE);  // guard: an overflow faults instead of corrupting a neighbour
        auto* lo = static_cast<unsigned char*>(p) + page;
        all.push_back(lo);
        return lo;
    }
    void release(unsigned char* s) { free_list.push_back(s); }
    ~StackPool() {
        for (unsigned char* s : all) munmap(s - page, stack_bytes() + page);
    }
};

// ---------------------------------------------------------------------------------------------
// The block scheduler.
struct Site {
    const char* file = "";
    unsigned line = 0, column = 0;
    static Site of(const std::source_location& s) { return Site{s.file_name(), static_cast<unsigned>(s.line()), static_cast<unsigned>(s.column())}; }
    bool operator==(const Site& o) const {
        return line == o.line && column == o.column && (file == o.file || std::strcmp(file, o.file) == 0);
    }
    std::string str() const {
        const char* base = std::strrchr(file, '/');
        return std::string(base ? base + 1 : file) + ":" + std::to_string(line);
    }
};

enum class FiberState : uint8_t { NotStarted, Ready, AtBlockBarrier, AtWarpOp, Exited, Abandoned };

struct Fiber {
    Context ctx;
    unsigned char* stack = nullptr;
    uint3 tid{0, 0, 0};
    FiberState state = FiberState::NotStarted;
    uint64_t collective_result = 0;  // written when the fiber's warp collective releases
};

// One pending warp collective: the lanes that arrived at an operation with one mask.
struct WarpGroup {
    unsigned mask = 0, arrived = 0;
    WarpOp op = WarpOp::Sync;
    int width = 32;
    Site site;
    uint64_t value[32];
    int arg[32];
};

struct Warp {
    unsigned exists = 0, exited = 0;
    std::vector<WarpGroup> pending;
};

const char* op_name(WarpOp op) {
    switch (op) {
        case WarpOp::Sync: return "__syncwarp";
        case WarpOp::ShflIdx: return "__shfl_sync";
        case WarpOp::ShflUp: return "__shfl_up_sync";
        case WarpOp::ShflDown: return "__shfl_down_sync";
        case WarpOp::ShflXor: return "__shfl_xor_sync";
        case WarpOp::Vote: return "__ballot_sync/__any_sync/__all_sync";
    }
    return "?";
}

std::string tid_str(uint3 t) {
    return "(" + std::to_string(t.x) + "," + std::to_string(t.y) + "," + std::to_string(t.z) + ")";
}

// What a lane reads for a shuffle of `group` (CUDA's rules for width segments; lanes that did
// not take part read as poison).
constexpr uint64_t kPoison = ~uint64_t(0);

struct Runner {
    const char* kernel = "";
    BlockBody body = nullptr;
    void* body_ctx = nullptr;
    dim3 bdim, gdim;
    uint3 bidx{0, 0, 0};
    unsigned nthreads = 0;

    std::vector<Fiber> fibers;
    std::vector<Warp> warps;
    std::vector<unsigned> ring;  // ready queue, capacity nthreads (a fiber is queued at most once)
    unsigned head = 0, count = 0;
    Context sched;
    unsigned cur = 0;

    unsigned at_barrier = 0, exited = 0;
    Site barrier_site;

    int error = MULTIMAT_SIM_OK;
    std::string message;
    StackPool stacks;
    unsigned char* dyn = nullptr;
    std::size_t dyn_capacity = 0;

    ~Runner() { std::free(dyn); }

    void push(unsigned i) {
        ring[(head + count) % nthreads] = i;
        ++count;
    }
    unsigned pop() {
        unsigned i = ring[head];
        head = (head + 1) % nthreads;
        --count;
        return i;
    }

    std::string where() const {
        return std::string("kernel ") + kernel + ", block " + tid_str(bidx) + " of grid " + tid_str(gdim) +
               ", block size " + tid_str(bdim);
    }

    // A stack whose fiber has exited; it is still in use until the switch away from it is done,
    // so whichever context runs next returns it to the pool.
    unsigned char* zombie = nullptr;
    void recycle_zombie() {
        if (zombie != nullptr) {
            stacks.release(zombie);
            zombie = nullptr;
        }
    }

    // Make fiber `i` current and switch to it from `from` (starting it on a fresh stack if it
    // has not run yet). Falls back to the scheduler if no stack can be had.
    void switch_to(Context& from, unsigned i) {
        Fiber& to = fibers[i];
        if (to.state == FiberState::NotStarted) {
            to.stack = stacks.acquire();
            if (to.stack == nullptr) {
                if (error == MULTIMAT_SIM_OK) {
                    error = MULTIMAT_SIM_OUT_OF_RESOURCES;
                    message = where() + ": cannot map a " + std::to_string(stack_bytes() / 1024) + " KiB stack for thread " + tid_str(to.tid);
                }
                switch_context(from, sched);
                return;
            }
            to.ctx.start(to.stack, stack_bytes(), &Runner::fiber_main, this);
        }
        to.state = FiberState::Ready;
        cur = i;
        thread_idx = to.tid;
        // A fiber that released its own barrier and is next in line just carries on (switching
        // to itself would load the stack pointer saved at its previous switch).
        if (&from != &to.ctx) switch_context(from, to.ctx);
    }

    // The current fiber stops (it waits, or has exited): run the next ready fiber directly, or
    // return to the scheduler when none is left (the block is done, or deadlocked).
    void switch_away(Context& from) {
        if (count > 0 && error == MULTIMAT_SIM_OK) {
            switch_to(from, pop());
        } else {
            switch_context(from, sched);
        }
        recycle_zombie();  // resumed: the context that ran before may have left its stack
    }

    // Called by a fiber: record the error and leave for the scheduler for good.
    [[noreturn]] void fail(int code, const std::string& what) {
        if (error == MULTIMAT_SIM_OK) {
            error = code;
            message = where() + ": " + what;
        }
        fibers[cur].state = FiberState::Abandoned;
        switch_context(fibers[cur].ctx, sched);
        std::abort();  // never resumed
    }

    // ---- __syncthreads
    void block_barrier(const Site& site) {
        Fiber& f = fibers[cur];
        if (exited > 0) {
            fail(MULTIMAT_SIM_DEADLOCK, "deadlock: thread " + tid_str(f.tid) + " waits at __syncthreads (" + site.str() + ") but " +
                                            std::to_string(exited) + " thread(s) of the block have already exited and can never arrive");
        }
        if (at_barrier == 0) {
            barrier_site = site;
        } else if (!(barrier_site == site)) {
            fail(MULTIMAT_SIM_DEADLOCK, "deadlock: divergent __syncthreads: thread " + tid_str(f.tid) + " waits at " + site.str() + " while " +
                                            std::to_string(at_barrier) + " thread(s) wait at " + barrier_site.str());
        }
        if (++at_barrier == nthreads) {
            // Everyone is here: all queue up again in thread order, this one included.
            at_barrier = 0;
            for (unsigned i = 0; i < nthreads; ++i) {
                fibers[i].state = FiberState::Ready;
                push(i);
            }
        } else {
            f.state = FiberState::AtBlockBarrier;
        }
        switch_away(f.ctx);
    }

    // ---- warp collectives
    // Hand each lane of pending group `gi` of warp `wi` its result and queue it (lane order).
    void release_group(unsigned wi, unsigned gi) {
        Warp& w = warps[wi];
        WarpGroup& g = w.pending[gi];
        unsigned took_part = g.arrived;
        unsigned ballot = 0;
        if (g.op == WarpOp::Vote) {
            for (unsigned l = 0; l < 32; ++l)
                if ((took_part >> l & 1u) && g.value[l]) ballot |= 1u << l;
        }
        for (unsigned lanes = took_part; lanes != 0; lanes &= lanes - 1) {
            unsigned lane = static_cast<unsigned>(__builtin_ctz(lanes));
            uint64_t r = 0;
            int width = g.width;
            int seg = static_cast<int>(lane) & ~(width - 1);
            int src = static_cast<int>(lane);
            switch (g.op) {
                case WarpOp::Sync: r = took_part; break;
                case WarpOp::Vote: r = (uint64_t(took_part) << 32) | ballot; break;
                case WarpOp::ShflIdx: src = seg + (g.arg[lane] & (width - 1)); break;
                case WarpOp::ShflUp: {
                    int s = static_cast<int>(lane) - g.arg[lane];
                    if (g.arg[lane] >= 0 && s >= seg) src = s;
                    break;
                }
                case WarpOp::ShflDown: {
                    long s = static_cast<long>(lane) + static_cast<unsigned>(g.arg[lane]);
                    if (s < seg + width) src = static_cast<int>(s);
                    break;
                }
                case WarpOp::ShflXor: {
                    int s = static_cast<int>(lane) ^ (g.arg[lane] & 31);
                    if (s < seg + width) src = s;
                    break;
                }
            }
            if (g.op != WarpOp::Sync && g.op != WarpOp::Vote) r = (took_part >> src & 1u) ? g.value[src] : kPoison;
            unsigned rank = wi * 32 + lane;
            fibers[rank].collective_result = r;
            fibers[rank].state = FiberState::Ready;
            push(rank);
        }
        w.pending.erase(w.pending.begin() + gi);
    }

    // Release every group of warp `wi` whose expected lanes (mask ∩ existing ∩ not exited) are in.
    void try_release(unsigned wi) {
        Warp& w = warps[wi];
        for (unsigned gi = 0; gi < w.pending.size();) {
            const WarpGroup& g = w.pending[gi];
            unsigned expected = g.mask & w.exists & ~w.exited;
            if ((g.arrived & expected) == expected) {
                release_group(wi, gi);
            } else {
                ++gi;
            }
        }
    }

    uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t bits, int arg, int width, const Site& site) {
        Fiber& f = fibers[cur];
        unsigned wi = cur / 32, lane = cur % 32;
        if (!(mask >> lane & 1u)) {
            char m[16];
            std::snprintf(m, sizeof m, "0x%08x", mask);
            fail(MULTIMAT_SIM_INVALID_WARP_OP, std::string(op_name(op)) + " (" + site.str() + "): thread " + tid_str(f.tid) + " (lane " +
                                                   std::to_string(lane) + ") is not in its own mask " + m);
        }
        if (width < 1 || width > 32 || (width & (width - 1)) != 0) {
            fail(MULTIMAT_SIM_INVALID_WARP_OP, std::string(op_name(op)) + " (" + site.str() + "): width " + std::to_string(width) +
                                                   " is not a power of two in 1..32");
        }
        Warp& w = warps[wi];
        WarpGroup* g = nullptr;
        for (WarpGroup& p : w.pending)
            if (p.mask == mask) g = &p;
        if (g == nullptr) {
            g = &w.pending.emplace_back();
            g->mask = mask;
            g->arrived = 0;
            g->op = op;
            g->width = width;
            g->site = site;
        } else if (g->op != op || g->width != width) {
            fail(MULTIMAT_SIM_INVALID_WARP_OP, "lanes of warp " + std::to_string(wi) + " meet with the same mask at different warp operations: " +
                                                   op_name(g->op) + " (" + g->site.str() + ") and " + op_name(op) + " (" + site.str() + ")");
        }
        g->arrived |= 1u << lane;
        g->value[lane] = bits;
        g->arg[lane] = arg;
        f.state = FiberState::AtWarpOp;
        try_release(wi);
        switch_away(f.ctx);
        return fibers[cur].collective_result;
    }

    // ---- thread exit: bookkeeping (fails on a barrier that can no longer complete)
    void thread_exited() {
        Fiber& f = fibers[cur];
        f.state = FiberState::Exited;
        ++exited;
        if (at_barrier > 0) {
            fail(MULTIMAT_SIM_DEADLOCK, "deadlock: thread " + tid_str(f.tid) + " exited while " + std::to_string(at_barrier) +
                                            " thread(s) wait at __syncthreads (" + barrier_site.str() + ")");
        }
        unsigned wi = cur / 32;
        warps[wi].exited |= 1u << (cur % 32);
        if (!warps[wi].pending.empty()) try_release(wi);
    }

    // A fiber's life. When its thread returns and the next queued thread has not started yet,
    // that thread runs on here, on the same stack, without a switch: a kernel without barriers
    // runs as a plain loop over its threads.
    static void fiber_main(void* self) {
        Runner* r = static_cast<Runner*>(self);
        r->recycle_zombie();
        for (;;) {
            try {
                r->body(r->body_ctx);
            } catch (const std::exception& e) {
                r->fail(MULTIMAT_SIM_INTERNAL, std::string("C++ exception in thread ") + tid_str(r->fibers[r->cur].tid) + ": " + e.what());
            } catch (...) {
                r->fail(MULTIMAT_SIM_INTERNAL, "C++ exception in thread " + tid_str(r->fibers[r->cur].tid));
            }
            r->thread_exited();
            Fiber& done = r->fibers[r->cur];
            if (r->count > 0 && r->error == MULTIMAT_SIM_OK && r->fibers[r->ring[r->head]].state == FiberState::NotStarted) {
                unsigned next = r->pop();
                Fiber& n = r->fibers[next];
                n.stack = done.stack;
                done.stack = nullptr;
                n.state = FiberState::Ready;
                r->cur = next;
                thread_idx = n.tid;
                continue;
            }
            r->zombie = done.stack;
            done.stack = nullptr;
            r->switch_away(done.ctx);
            std::abort();  // an exited fiber is never resumed
        }
    }

    void prepare(const char* name, const MultimatSimLaunch& cfg, BlockBody b, void* ctx) {
        kernel = name;
        body = b;
        body_ctx = ctx;
        bdim = dim3(cfg.block[0], cfg.block[1], cfg.block[2]);
        gdim = dim3(cfg.grid[0], cfg.grid[1], cfg.grid[2]);
        nthreads = bdim.x * bdim.y * bdim.z;
        fibers.resize(nthreads);
        for (unsigned i = 0; i < nthreads; ++i) fibers[i].tid = uint3{i % bdim.x, (i / bdim.x) % bdim.y, i / (bdim.x * bdim.y)};
        unsigned nwarps = (nthreads + 31) / 32;
        warps.resize(nwarps);
        for (unsigned wi = 0; wi < nwarps; ++wi) {
            unsigned lanes = std::min(32u, nthreads - wi * 32);
            warps[wi].exists = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1);
            warps[wi].pending.reserve(4);
        }
        ring.resize(nthreads);
        std::size_t want = (std::max<std::size_t>(cfg.shared_bytes, 16) + 63) & ~std::size_t(63);
        if (want > dyn_capacity) {
            std::free(dyn);
            dyn = static_cast<unsigned char*>(std::aligned_alloc(64, want));
            dyn_capacity = dyn ? want : 0;
        }
        shared_bytes = cfg.shared_bytes;
        block_dim = bdim;
        grid_dim = gdim;
    }
    unsigned shared_bytes = 0;

    // Run one block to completion; returns an error code (message in `message`).
    int run_block(uint3 b) {
        bidx = b;
        block_idx = b;
        error = MULTIMAT_SIM_OK;
        message.clear();
        if (dyn == nullptr) {
            error = MULTIMAT_SIM_OUT_OF_RESOURCES;
            message = where() + ": cannot allocate " + std::to_string(shared_bytes) + " bytes of dynamic shared memory";
            return error;
        }
        std::memset(dyn, 0xff, shared_bytes);
        dynamic_shared_base = dyn;
        at_barrier = exited = 0;
        for (Warp& w : warps) {
            w.exited = 0;
            w.pending.clear();
        }
        head = 0;
        count = 0;
        for (unsigned i = 0; i < nthreads; ++i) {
            fibers[i].state = FiberState::NotStarted;
            push(i);
        }
        // Fibers hand over to each other; control comes back here when the queue is empty
        // (done or deadlocked) or on an error.
        while (count > 0 && error == MULTIMAT_SIM_OK) {
            switch_to(sched, pop());
            recycle_zombie();
        }
        if (error == MULTIMAT_SIM_OK && exited != nthreads) error = report_deadlock();
        // Fibers left waiting are abandoned mid-stack; their stacks go back to the pool.
        recycle_zombie();
        for (Fiber& f : fibers) {
            if (f.stack != nullptr) {
                stacks.release(f.stack);
                f.stack = nullptr;
            }
        }
        dynamic_shared_base = nullptr;
        return error;
    }

    int report_deadlock() {
        std::string what = "deadlock: no thread can proceed; " + std::to_string(exited) + " of " + std::to_string(nthreads) + " exited";
        if (at_barrier > 0) what += "; " + std::to_string(at_barrier) + " wait at __syncthreads (" + barrier_site.str() + ")";
        for (unsigned wi = 0; wi < warps.size(); ++wi) {
            for (const WarpGroup& g : warps[wi].pending) {
                char m[16];
                std::snprintf(m, sizeof m, "0x%08x", g.mask);
                what += "; warp " + std::to_string(wi) + ": " + std::to_string(__builtin_popcount(g.arrived)) + " lane(s) wait at " +
                        op_name(g.op) + " (" + g.site.str() + ") with mask " + m + " for lanes that never arrive";
            }
        }
        message = where() + ": " + what;
        return MULTIMAT_SIM_DEADLOCK;
    }
};

thread_local Runner* tls_runner = nullptr;
thread_local std::string tls_last_error;

Runner& local_runner() {
    thread_local std::unique_ptr<Runner> runner(new Runner());
    return *runner;
}

// ---------------------------------------------------------------------------------------------
// The grid: blocks handed out in increasing order to the calling thread and the pool's workers.
struct GridJob {
    const char* kernel;
    MultimatSimLaunch cfg;
    BlockBody body;
    void* ctx;
    uint64_t total;
    std::atomic<uint64_t> next{0};
    std::atomic<bool> failed{false};
    std::mutex m;
    std::condition_variable cv;
    unsigned helpers = 0;  // pool workers inside work(); guarded by the pool mutex
    uint64_t error_block = ~uint64_t(0);
    int error = MULTIMAT_SIM_OK;
    std::string message;

    void work() {
        Runner& r = local_runner();
        Runner* saved = tls_runner;
        tls_runner = &r;
        r.prepare(kernel, cfg, body, ctx);
        const uint64_t gx = cfg.grid[0], gxy = gx * cfg.grid[1];
        for (;;) {
            if (failed.load(std::memory_order_relaxed)) break;
            uint64_t b = next.fetch_add(1, std::memory_order_relaxed);
            if (b >= total) break;
            uint3 bi{static_cast<unsigned>(b % gx), static_cast<unsigned>((b / gx) % cfg.grid[1]), static_cast<unsigned>(b / gxy)};
            int e = r.run_block(bi);
            if (e != MULTIMAT_SIM_OK) {
                std::lock_guard<std::mutex> g(m);
                // The lowest failing block wins, so the report does not depend on timing.
                if (b < error_block) {
                    error_block = b;
                    error = e;
                    message = r.message;
                }
                failed.store(true, std::memory_order_relaxed);
            }
        }
        tls_runner = saved;
    }
};

struct Pool {
    std::mutex m;
    std::condition_variable cv;
    std::deque<GridJob*> jobs;
    unsigned workers = 0;

    static unsigned wanted_threads() {
        if (const char* s = std::getenv("MULTIMAT_SIM_THREADS")) {
            long v = std::strtol(s, nullptr, 10);
            if (v >= 1 && v <= 256) return static_cast<unsigned>(v);
        }
        unsigned hw = std::thread::hardware_concurrency();
        return hw == 0 ? 1 : std::min(hw, 16u);
    }

    Pool() {
        workers = wanted_threads() - 1;  // the launching thread works too
        for (unsigned i = 0; i < workers; ++i) std::thread([this] { serve(); }).detach();
    }

    void serve() {
        std::unique_lock<std::mutex> lock(m);
        for (;;) {
            cv.wait(lock, [this] { return !jobs.empty(); });
            GridJob* job = jobs.front();
            // A job whose blocks are all handed out leaves the queue; its owner waits for helpers.
            if (job->next.load(std::memory_order_relaxed) >= job->total || job->failed.load(std::memory_order_relaxed)) {
                jobs.pop_front();
                continue;
            }
            ++job->helpers;
            lock.unlock();
            job->work();
            lock.lock();
            if (--job->helpers == 0) job->cv.notify_all();
        }
    }

    void run(GridJob& job) {
        {
            std::lock_guard<std::mutex> g(m);
            jobs.push_back(&job);
        }
        cv.notify_all();
        job.work();
        std::unique_lock<std::mutex> lock(m);
        for (auto it = jobs.begin(); it != jobs.end(); ++it) {
            if (*it == &job) {
                jobs.erase(it);
                break;
            }
        }
        // No worker can pick the job up any more; wait for those inside it. Workers signal
        // job.cv while holding the pool mutex, which this wait releases.
        job.cv.wait(lock, [&] { return job.helpers == 0; });
    }
};

Pool& pool() {
    static Pool* p = new Pool();  // never destroyed: detached workers outlive static destructors
    return *p;
}

constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr unsigned kMaxSharedBytes = 227 * 1024;

bool check_config(const char* kernel, const MultimatSimLaunch& c) {
    std::string why;
    uint64_t threads = uint64_t(c.block[0]) * c.block[1] * c.block[2];
    if (c.grid[0] == 0 || c.grid[1] == 0 || c.grid[2] == 0) why = "a grid dimension is 0";
    else if (c.block[0] == 0 || c.block[1] == 0 || c.block[2] == 0) why = "a block dimension is 0";
    else if (threads > kMaxThreadsPerBlock) why = std::to_string(threads) + " threads per block (at most 1024)";
    else if (c.block[2] > 64) why = "block z " + std::to_string(c.block[2]) + " (at most 64)";
    else if (c.grid[0] > 0x7fffffffu || c.grid[1] > 65535 || c.grid[2] > 65535) why = "grid exceeds (2^31-1, 65535, 65535)";
    else if (c.shared_bytes > kMaxSharedBytes) why = std::to_string(c.shared_bytes) + " bytes of dynamic shared memory (at most 227 KiB)";
    if (why.empty()) return true;
    set_error(MULTIMAT_SIM_INVALID_CONFIG, kernel,
              ("invalid launch: grid " + tid_str(uint3{c.grid[0], c.grid[1], c.grid[2]}) + ", block " +
               tid_str(uint3{c.block[0], c.block[1], c.block[2]}) + ": " + why)
                  .c_str());
    return false;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
void set_error(int code, const char* kernel, const char* message) {
    (void)code;
    tls_last_error = std::string("kernel ") + kernel + ": " + message;
}

void block_barrier(const std::source_location& site) {
    Runner* r = tls_runner;
    r->block_barrier(Site::of(site));
}

uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t bits, int arg, int width, const std::source_location& site) {
    return tls_runner->warp_collective(op, mask, bits, arg, width, Site::of(site));
}

unsigned lanes_alive_mask() {
    Runner* r = tls_runner;
    const Warp& w = r->warps[r->cur / 32];
    return w.exists & ~w.exited;
}

int run_grid(const char* kernel, const MultimatSimLaunch* cfg, BlockBody body, void* ctx) {
    tls_last_error.clear();
    if (!check_config(kernel, *cfg)) return MULTIMAT_SIM_INVALID_CONFIG;
    if (tls_runner != nullptr) {
        set_error(MULTIMAT_SIM_INVALID_CONFIG, kernel, "a kernel cannot launch another kernel under the simulator");
        return MULTIMAT_SIM_INVALID_CONFIG;
    }
    GridJob job;
    job.kernel = kernel;
    job.cfg = *cfg;
    job.body = body;
    job.ctx = ctx;
    job.total = uint64_t(cfg->grid[0]) * cfg->grid[1] * cfg->grid[2];
    try {
        if (job.total == 1 || pool().workers == 0) {
            job.work();
        } else {
            pool().run(job);
        }
    } catch (const std::exception& e) {
        set_error(MULTIMAT_SIM_INTERNAL, kernel, e.what());
        return MULTIMAT_SIM_INTERNAL;
    }
    if (job.error != MULTIMAT_SIM_OK) tls_last_error = job.message;
    return job.error;
}

}  // namespace multimat_sim

extern "C" const char* multimat_sim_last_error(void) { return multimat_sim::tls_last_error.c_str(); }
