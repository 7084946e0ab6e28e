// The locally connected layer's three products on the CPU, compiled at first use by catneuron.model.local_cpp
// (g++ -O3 -march=native, loaded with ctypes: no Python or torch headers, so it builds in seconds).
//
// Layouts are the sweeps' (catneuron/model/local_reference.py): images (H, W, C, B), weights (L, O, P) with
// P = k*k*C ordered (window row, window column, channel), codes (L, O, B), all contiguous. Every output value is
// written by one task with a fixed order of summation, so the bits do not depend on the number of threads.
//
// Register tiles (the compiler vectorizes the innermost fixed-size loops):
//   contract  codes[l, o, b]: 8 maps x 48 batch entries (then 32, 16, 4, 1), summed over the position's window
//             (batch-contiguous rows).
//   spread    image[Y, q, b]: 8 entries of one position column's window row x 48 batch entries, summed over every
//             (covering output row, map) and added into the image row once: gathered, so each image row is written
//             by one task and no thread adds into another's; a task paints a band of rows column by column.
//   correlate grad[l, o, p]: 8 maps x 32 fan-in entries (or two window rows of at most half a vector in one), summed
//             over the batch from a copy of the image transposed to (H, B, W*C + pad) so that a window row is
//             contiguous per image; a position's gradient is summed in a buffer and streamed to memory.

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>
#include <unistd.h>
#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace {

using i64 = int64_t;

struct Geo {
    i64 H, W, C, k, s, B, O;
    i64 oh() const { return (H - k) / s + 1; }
    i64 ow() const { return (W - k) / s + 1; }
    i64 kC() const { return k * C; }
    i64 P() const { return k * k * C; }
};

// ---------------------------------------------------------------------------------------------------------------
// Tasks on a pool of threads: the caller and `threads - 1` workers take the next task from a shared counter until
// none is left, so a core slowed by another process simply takes fewer tasks; the only wait is the end of a call.

class Pool {
  public:
    void run(i64 count, int threads, const std::function<void(i64)>& task) {
        std::lock_guard<std::mutex> one_call(call_);  // calls from several Python threads take turns
        threads = int(std::max<i64>(1, std::min<i64>(threads, count)));
        if (threads == 1) {
            for (i64 i = 0; i < count; ++i) task(i);
            return;
        }
        grow(threads - 1);
        {
            std::lock_guard<std::mutex> lock(m_);
            task_ = &task;
            count_ = count;
            next_.store(0);
            helpers_ = threads - 1;
            pending_ = threads - 1;
            ++generation_;
        }
        wake_.notify_all();
        drain();
        std::unique_lock<std::mutex> lock(m_);
        done_.wait(lock, [&] { return pending_ == 0; });
    }

  private:
    void drain() {
        for (i64 i = next_.fetch_add(1); i < count_; i = next_.fetch_add(1)) (*task_)(i);
    }

    void grow(int helpers) {
        if (pid_ != getpid()) {  // a forked child has none of its parent's threads
            for (auto& t : threads_) t.detach();
            threads_.clear();
            pid_ = getpid();
        }
        while (int(threads_.size()) < helpers) {
            int index = int(threads_.size());
            threads_.emplace_back([this, index] { loop(index); });
        }
    }

    void loop(int index) {
        uint64_t seen = 0;
        for (;;) {
            {
                std::unique_lock<std::mutex> lock(m_);
                wake_.wait(lock, [&] { return generation_ != seen && index < helpers_; });
                seen = generation_;
            }
            drain();
            std::lock_guard<std::mutex> lock(m_);
            if (--pending_ == 0) done_.notify_all();
        }
    }

    std::mutex call_, m_;
    std::condition_variable wake_, done_;
    std::vector<std::thread> threads_;
    const std::function<void(i64)>* task_ = nullptr;
    std::atomic<i64> next_{0};
    i64 count_ = 0;
    int helpers_ = 0, pending_ = 0;
    uint64_t generation_ = 0;
    pid_t pid_ = getpid();
};

Pool& pool() {
    static Pool* p = new Pool();  // never destroyed: its threads live as long as the process
    return *p;
}

// Tasks of `count` items in about `pieces` consecutive ranges (independent of the thread count).
void run_ranges(i64 count, i64 pieces, int threads, const std::function<void(i64, i64)>& body) {
    pieces = std::max<i64>(1, std::min(pieces, count));
    pool().run(pieces, threads, [&](i64 i) { body(count * i / pieces, count * (i + 1) / pieces); });
}

constexpr int lanes_bytes() {
#ifdef __AVX512F__
    return 64;
#else
    return 32;
#endif
}
template <typename T> constexpr int LANES = lanes_bytes() / int(sizeof(T));

// A vector of N values of T (the compiler's vector extension; N = 1 is T itself), loaded and stored unaligned.
template <typename T, int N> struct Lanes { typedef T type __attribute__((vector_size(N * sizeof(T)))); };
template <typename T> struct Lanes<T, 1> { using type = T; };
template <typename V, typename T> inline V load(const T* p) { V v; std::memcpy(&v, p, sizeof(V)); return v; }
template <typename V, typename T> inline void store(T* p, const V& v) { std::memcpy(p, &v, sizeof(V)); }

// f(0), f(1), ..., f(N - 1) written out with constant indices, so that tiles of accumulators stay in registers.
template <int N, typename F> inline __attribute__((always_inline)) void unroll(F&& f) {
    [&]<int... I>(std::integer_sequence<int, I...>) { (f(std::integral_constant<int, I>{}), ...); }(
        std::make_integer_sequence<int, N>{});
}

// The batch in tiles of three vectors, two, one, four lanes, one entry: f(lanes, vectors, first entry).
template <typename T, typename F> void batch_tiles(i64 B, F&& f) {
    constexpr int L = LANES<T>;
    i64 b = 0;
    for (; b + 3 * L <= B; b += 3 * L) f(std::integral_constant<int, L>{}, std::integral_constant<int, 3>{}, b);
    for (; b + 2 * L <= B; b += 2 * L) f(std::integral_constant<int, L>{}, std::integral_constant<int, 2>{}, b);
    for (; b + L <= B; b += L) f(std::integral_constant<int, L>{}, std::integral_constant<int, 1>{}, b);
    for (; b + 4 <= B; b += 4) f(std::integral_constant<int, 4>{}, std::integral_constant<int, 1>{}, b);
    for (; b < B; ++b) f(std::integral_constant<int, 1>{}, std::integral_constant<int, 1>{}, b);
}

// Maps (or other rows) in blocks of 8, 4, 2, 1: f(block, first).
template <typename F> void map_blocks(i64 count, F&& f) {
    i64 o = 0;
    for (; o + 8 <= count; o += 8) f(std::integral_constant<int, 8>{}, o);
    for (; o + 4 <= count; o += 4) f(std::integral_constant<int, 4>{}, o);
    for (; o + 2 <= count; o += 2) f(std::integral_constant<int, 2>{}, o);
    for (; o < count; ++o) f(std::integral_constant<int, 1>{}, o);
}

// ---------------------------------------------------------------------------------------------------------------
// contract: codes[l, o, b] = sum_p weight[l, o, p] * window_l[p, b]

template <typename T, int L, int NV, int OB>
void contract_tile(const T* __restrict w, i64 P, const T* __restrict x, i64 pitch, i64 k, i64 kC, i64 B,
                   T* __restrict out) {
    using V = typename Lanes<T, L>::type;
    V acc[OB * NV] = {};
    for (i64 dy = 0; dy < k; ++dy) {
        const T* xr = x + dy * pitch;
        const T* wr = w + dy * kC;
        for (i64 p = 0; p < kC; ++p) {
            V xv[NV];
            unroll<NV>([&](auto j) { xv[j] = load<V>(xr + p * B + j * L); });
            unroll<OB>([&](auto o) {
                const T wv = wr[o * P + p];
                unroll<NV>([&](auto j) { acc[o * NV + j] += xv[j] * wv; });
            });
        }
    }
    unroll<OB>([&](auto o) { unroll<NV>([&](auto j) { store(out + o * B + j * L, acc[o * NV + j]); }); });
}

template <typename T>
void contract(const T* image, const T* weight, T* codes, const Geo& g, int threads) {
    const i64 ow = g.ow(), pitch = g.W * g.C * g.B, P = g.P(), OP = g.O * P;
    run_ranges(g.oh() * ow, 4 * g.oh(), threads, [&](i64 first, i64 last) {
        for (i64 l = first; l < last; ++l) {
            const i64 y = l / ow, x = l % ow;
            const T* win = image + (y * g.s * g.W + x * g.s) * g.C * g.B;
            batch_tiles<T>(g.B, [&](auto lanes, auto vectors, i64 b) {
                map_blocks(g.O, [&](auto maps, i64 o) {
                    contract_tile<T, lanes, vectors, maps>(weight + l * OP + o * P, P, win + b, pitch, g.k, g.kC(),
                                                            g.B, codes + (l * g.O + o) * g.B + b);
                });
            });
        }
    });
}

// ---------------------------------------------------------------------------------------------------------------
// spread: image row Y = sum over the columns x of positions of the block painted there, block[e, b] =
// sum over the covering output rows y and maps o of weight[y ow + x, o, (Y - y s) kC + e] * codes[y ow + x, o, b].
// A tile is EB entries e of one position column's window row x NV vectors of the batch, summed in registers over
// every (covering row, map) pair (k/s * 8 terms: 64 at `small`, 144 at `paper`) and then added into the image row
// once: no window edge cuts a tile, and each image row is written by one task in a fixed order.

template <typename T, int L, int NV, int EB>
void spread_tile(const T* __restrict w, i64 w_step, const T* __restrict c, i64 c_step, i64 cover, i64 O, i64 P,
                 i64 B, T* __restrict row) {
    using V = typename Lanes<T, L>::type;
    V acc[EB * NV] = {};
    for (i64 j = 0; j < cover; ++j) {
        const T* wj = w + j * w_step;
        const T* cj = c + j * c_step;
        for (i64 o = 0; o < O; ++o) {
            V cv[NV];
            unroll<NV>([&](auto v) { cv[v] = load<V>(cj + o * B + v * L); });
            unroll<EB>([&](auto e) {
                const T wv = wj[o * P + e];
                unroll<NV>([&](auto v) { acc[e * NV + v] += cv[v] * wv; });
            });
        }
    }
    unroll<EB>([&](auto e) {
        unroll<NV>([&](auto v) { store(row + e * B + v * L, load<V>(row + e * B + v * L) + acc[e * NV + v]); });
    });
}

// Where an image row's covering positions lie: the first covering output row, their count, its window row.
struct Cover {
    i64 y0 = 0, count = 0, dy = 0;
    Cover(const Geo& g, i64 Y) {
        const i64 y_first = std::max<i64>(0, (Y - g.k + g.s) / g.s), y_last = std::min(g.oh() - 1, Y / g.s);
        y0 = (Y - y_first * g.s >= g.k) ? y_first + 1 : y_first;  // (Y - k + s) / s rounds toward zero
        count = std::max<i64>(0, y_last - y0 + 1);
        dy = Y - y0 * g.s;
    }
};

// The weights that image rows [Y0, Y1) read at position column x: for each covering output row and map, the window
// rows those image rows meet, one contiguous run; fetched a few columns ahead (the runs lie a position apart, a
// stride no hardware prefetcher follows, and waiting for them halved the rate at the `paper` shape).
template <typename T> void prefetch(const T* weight, const Geo& g, i64 Y0, i64 Y1, i64 x) {
    constexpr i64 line = 64 / i64(sizeof(T));
    const i64 kC = g.kC(), P = g.P();
    const Cover top(g, Y0), bottom(g, Y1 - 1);
    for (i64 y = top.y0; y < std::min(g.oh(), bottom.y0 + bottom.count); ++y) {
        const i64 first = std::max<i64>(0, Y0 - y * g.s) * kC, last = std::min(g.k, Y1 - y * g.s) * kC;
        const T* w = weight + (y * g.ow() + x) * g.O * P;
        for (i64 o = 0; o < g.O; ++o)
            for (i64 e = first; e < last + line - 1; e += line) __builtin_prefetch(w + o * P + std::min(e, last - 1));
    }
}

template <typename T>
void spread(const T* codes, const T* weight, T* image, const Geo& g, int threads) {
    const i64 ow = g.ow(), kC = g.kC(), P = g.P(), sC = g.s * g.C, row_size = g.W * g.C * g.B;
    // from one covering output row to the next: the position one row down, its window one stride up
    const i64 w_step = ow * g.O * P - g.s * kC, c_step = ow * g.O * g.B;
    // a task paints `band` image rows column by column, so a position's weights are read in runs of window rows
    // (up to 12; at least 8 tasks, so two threads share the work evenly)
    const i64 band = std::clamp<i64>(g.H / 8, 1, 12);
    const i64 bands = (g.H + band - 1) / band;
    run_ranges(bands, bands, threads, [&](i64 first, i64 last) {
        for (i64 t = first; t < last; ++t) {
            const i64 Y0 = t * band, Y1 = std::min(g.H, Y0 + band);
            std::fill(image + Y0 * row_size, image + Y1 * row_size, T(0));
            for (i64 x = 0; x < ow; ++x) {
                if (x + 2 < ow) prefetch(weight, g, Y0, Y1, x + 2);
                for (i64 Y = Y0; Y < Y1; ++Y) {
                    const Cover cover(g, Y);
                    if (cover.count == 0) continue;  // a row in no window
                    const T* w = weight + (cover.y0 * ow + x) * g.O * P + cover.dy * kC;
                    const T* c = codes + (cover.y0 * ow + x) * g.O * g.B;
                    T* out = image + Y * row_size + x * sC * g.B;
                    batch_tiles<T>(g.B, [&](auto lanes, auto vectors, i64 b) {
                        map_blocks(kC, [&](auto entries, i64 e) {
                            spread_tile<T, lanes, vectors, entries>(w + e, w_step, c + b, c_step, cover.count, g.O,
                                                                     P, g.B, out + e * g.B + b);
                        });
                    });
                }
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------------------------
// correlate: grad[l, o, (dy, p)] = sum_b codes[l, o, b] * image[y s + dy, x s C + p, b], from the transposed copy
// xt (H, B, WCp): R window rows x NV vectors of fan-in entries per tile (entries past a window row are computed
// from the padding or the next window and not stored).

template <typename T, int OB, int R, int NV>
void correlate_tile(const T* __restrict xt, i64 row_pitch, i64 b_pitch, const T* __restrict c, i64 B,
                    T* __restrict out, i64 P, i64 kC, i64 width) {
    constexpr int L = LANES<T>;
    using V = typename Lanes<T, L>::type;
    V acc[OB * R * NV] = {};
    for (i64 b = 0; b < B; ++b) {
        const T* xb = xt + b * b_pitch;
        V xv[R * NV];
        unroll<R * NV>([&](auto i) { xv[i] = load<V>(xb + (i / NV) * row_pitch + (i % NV) * L); });
        unroll<OB>([&](auto o) {
            const T cv = c[o * B + b];
            unroll<R * NV>([&](auto i) { acc[o * R * NV + i] += xv[i] * cv; });
        });
    }
    T row[NV * L];
    for (int o = 0; o < OB; ++o)
        for (int r = 0; r < R; ++r) {
            if (width == NV * L) {  // whole vectors stored as they are (a memcpy of a variable size is a call)
                for (int v = 0; v < NV; ++v) store(out + o * P + r * kC + v * L, acc[(o * R + r) * NV + v]);
                continue;
            }
            for (int v = 0; v < NV; ++v) store(row + v * L, acc[(o * R + r) * NV + v]);
            std::memcpy(out + o * P + r * kC, row, size_t(width) * sizeof(T));
        }
}

template <typename T, int R, int NV>
void correlate_position(const T* xt, const T* c, T* out, const Geo& g, i64 row_pitch, i64 b_pitch) {
    const i64 kC = g.kC(), P = g.P();
    constexpr i64 PB = NV * LANES<T>;
    map_blocks(g.O, [&](auto maps, i64 o) {
        i64 dy = 0;
        for (; dy + R <= g.k; dy += R)
            for (i64 p = 0; p < kC; p += PB)
                correlate_tile<T, maps, R, NV>(xt + dy * row_pitch + p, row_pitch, b_pitch, c + o * g.B, g.B,
                                               out + o * P + dy * kC + p, P, kC, std::min<i64>(PB, kC - p));
        for (; dy < g.k; ++dy)
            for (i64 p = 0; p < kC; p += PB)
                correlate_tile<T, maps, 1, NV>(xt + dy * row_pitch + p, row_pitch, b_pitch, c + o * g.B, g.B,
                                               out + o * P + dy * kC + p, P, kC, std::min<i64>(PB, kC - p));
    });
}

// Window rows of at most half a vector (the `small` preset's 8 entries in 16 lanes): two rows per vector, lanes
// [0, L/2) from row 2i and [L/2, L) from row 2i + 1, so no lane is spent on entries past a row. NV vectors: 2 NV rows.
template <typename V, typename H, int... I> inline V join(H lo, H hi, std::integer_sequence<int, I...>) {
#if defined(__clang__) || __GNUC__ >= 12
    return __builtin_shufflevector(lo, hi, I...);
#else  // older g++: through memory (slower, the same values)
    V v;
    std::memcpy(&v, &lo, sizeof(H));
    std::memcpy(reinterpret_cast<char*>(&v) + sizeof(H), &hi, sizeof(H));
    return v;
#endif
}

template <typename T, int OB, int NV>
void correlate_tile_halves(const T* __restrict xt, i64 row_pitch, i64 b_pitch, const T* __restrict c, i64 B,
                           T* __restrict out, i64 P, i64 kC, i64 width) {
    constexpr int L = LANES<T>, HL = L / 2;
    using V = typename Lanes<T, L>::type;
    using H = typename Lanes<T, HL>::type;
    V acc[OB * NV] = {};
    for (i64 b = 0; b < B; ++b) {
        const T* xb = xt + b * b_pitch;
        V xv[NV];
        unroll<NV>([&](auto i) {
            xv[i] = join<V>(load<H>(xb + 2 * i * row_pitch), load<H>(xb + (2 * i + 1) * row_pitch),
                            std::make_integer_sequence<int, L>{});
        });
        unroll<OB>([&](auto o) {
            const T cv = c[o * B + b];
            unroll<NV>([&](auto i) { acc[o * NV + i] += xv[i] * cv; });
        });
    }
    T row[L];
    for (int o = 0; o < OB; ++o)
        for (int i = 0; i < NV; ++i) {
            store(row, acc[o * NV + i]);
            if (width == HL) {  // the `small` stage 1: copies of a constant size, inlined
                std::memcpy(out + o * P + 2 * i * kC, row, HL * sizeof(T));
                std::memcpy(out + o * P + (2 * i + 1) * kC, row + HL, HL * sizeof(T));
                continue;
            }
            std::memcpy(out + o * P + 2 * i * kC, row, size_t(width) * sizeof(T));
            std::memcpy(out + o * P + (2 * i + 1) * kC, row + HL, size_t(width) * sizeof(T));
        }
}

// Entries [p, p + width) of every window row, width at most half a vector: two rows to a vector, a last odd row
// alone.
template <typename T, int OB>
void correlate_halves(const T* xt, const T* c, T* out, const Geo& g, i64 row_pitch, i64 b_pitch, i64 p, i64 width) {
    const i64 kC = g.kC(), P = g.P();
    i64 dy = 0;
    for (; dy + 4 <= g.k; dy += 4)
        correlate_tile_halves<T, OB, 2>(xt + dy * row_pitch + p, row_pitch, b_pitch, c, g.B, out + dy * kC + p, P, kC,
                                        width);
    for (; dy + 2 <= g.k; dy += 2)
        correlate_tile_halves<T, OB, 1>(xt + dy * row_pitch + p, row_pitch, b_pitch, c, g.B, out + dy * kC + p, P, kC,
                                        width);
    if (dy < g.k)
        correlate_tile<T, OB, 1, 1>(xt + dy * row_pitch + p, row_pitch, b_pitch, c, g.B, out + dy * kC + p, P, kC,
                                    width);
}

template <typename T>
void correlate_position_halves(const T* xt, const T* c, T* out, const Geo& g, i64 row_pitch, i64 b_pitch) {
    map_blocks(g.O, [&](auto maps, i64 o) {
        correlate_halves<T, maps>(xt, c + o * g.B, out + o * g.P(), g, row_pitch, b_pitch, 0, g.kC());
    });
}

// Window rows longer than a vector (the `paper` stage 1's 54 entries): whole vectors in tiles of three, two, one,
// then the rest; a rest of at most half a vector two rows to a vector (54 = 48 + 6: 112 lanes for 108 entries of
// two rows, where tiles of two vectors took 128).
template <typename T>
void correlate_position_long(const T* xt, const T* c, T* out, const Geo& g, i64 row_pitch, i64 b_pitch) {
    constexpr int L = LANES<T>;
    const i64 kC = g.kC(), P = g.P(), whole = kC / L * L, rest = kC - whole;
    map_blocks(g.O, [&](auto maps, i64 o) {
        const T* co = c + o * g.B;
        T* oo = out + o * P;
        for (i64 dy = 0; dy < g.k; ++dy) {
            const T* x = xt + dy * row_pitch;
            T* od = oo + dy * kC;
            i64 p = 0;
            for (; p + 3 * L <= whole; p += 3 * L)
                correlate_tile<T, maps, 1, 3>(x + p, row_pitch, b_pitch, co, g.B, od + p, P, kC, 3 * L);
            for (; p + 2 * L <= whole; p += 2 * L)
                correlate_tile<T, maps, 1, 2>(x + p, row_pitch, b_pitch, co, g.B, od + p, P, kC, 2 * L);
            for (; p < whole; p += L)
                correlate_tile<T, maps, 1, 1>(x + p, row_pitch, b_pitch, co, g.B, od + p, P, kC, L);
            if (rest > L / 2)
                correlate_tile<T, maps, 1, 1>(x + whole, row_pitch, b_pitch, co, g.B, od + whole, P, kC, rest);
        }
        if (rest > 0 && rest <= L / 2) correlate_halves<T, maps>(xt, co, oo, g, row_pitch, b_pitch, whole, rest);
    });
}

// A position's gradient, summed in a buffer that stays in L1, goes to memory with non-temporal stores: written once
// and not read again in the call, it would otherwise evict the image rows the next positions read (a third of the
// rate at the `paper` shape). Stores past a 16-byte boundary only; the ends copied plainly.
template <typename T> void stream_copy(T* dst, const T* src, i64 n) {
#if defined(__SSE2__)
    char* d = reinterpret_cast<char*>(dst);
    const char* s = reinterpret_cast<const char*>(src);
    size_t bytes = size_t(n) * sizeof(T), head = std::min(bytes, size_t((16 - uintptr_t(d) % 16) % 16));
    std::memcpy(d, s, head);
    size_t i = head;
    for (; i + 16 <= bytes; i += 16) _mm_stream_si128(reinterpret_cast<__m128i*>(d + i), _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i)));
    std::memcpy(d + i, s + i, bytes - i);
#else
    std::memcpy(dst, src, size_t(n) * sizeof(T));
#endif
}

inline void stream_fence() {
#if defined(__SSE2__)
    _mm_sfence();  // the streamed stores visible before the call returns
#endif
}

template <typename T>
void correlate(const T* image, const T* codes, T* grad, const Geo& g, int threads) {
    constexpr int L = LANES<T>;
    const i64 WC = g.W * g.C, WCp = WC + 2 * L;  // padding: a tile may read two vectors past a window row
    std::vector<T> xt(size_t(g.H * g.B * WCp), T(0));
    run_ranges(g.H, g.H, threads, [&](i64 first, i64 last) {  // (H, WC, B) -> (H, B, WCp)
        for (i64 Y = first; Y < last; ++Y)
            for (i64 q = 0; q < WC; ++q)
                for (i64 b = 0; b < g.B; ++b) xt[(Y * g.B + b) * WCp + q] = image[(Y * WC + q) * g.B + b];
    });
    const i64 ow = g.ow(), kC = g.kC(), row_pitch = g.B * WCp;
    run_ranges(g.oh() * ow, 4 * g.oh(), threads, [&](i64 first, i64 last) {
        std::vector<T> local(size_t(g.O * g.P()));
        for (i64 l = first; l < last; ++l) {
            const i64 y = l / ow, x = l % ow;
            const T* base = xt.data() + y * g.s * row_pitch + x * g.s * g.C;
            const T* c = codes + l * g.O * g.B;
            T* out = local.data();
            if (kC <= L / 2)
                correlate_position_halves<T>(base, c, out, g, row_pitch, WCp);
            else if (kC <= L)  // short window rows: several per tile
                correlate_position<T, 2, 1>(base, c, out, g, row_pitch, WCp);
            else
                correlate_position_long<T>(base, c, out, g, row_pitch, WCp);
            stream_copy(grad + l * g.O * g.P(), local.data(), g.O * g.P());
        }
        stream_fence();
    });
}

Geo geo(const i64* d) { return Geo{d[0], d[1], d[2], d[3], d[4], d[5], d[6]}; }

}  // namespace

// The C interface: geometry as (height, width, channels, kernel, stride, batch, maps).
extern "C" {
void catneuron_contract_f32(const float* i, const float* w, float* c, const i64* d, int t) { contract(i, w, c, geo(d), t); }
void catneuron_contract_f64(const double* i, const double* w, double* c, const i64* d, int t) { contract(i, w, c, geo(d), t); }
void catneuron_spread_f32(const float* c, const float* w, float* i, const i64* d, int t) { spread(c, w, i, geo(d), t); }
void catneuron_spread_f64(const double* c, const double* w, double* i, const i64* d, int t) { spread(c, w, i, geo(d), t); }
void catneuron_correlate_f32(const float* i, const float* c, float* g, const i64* d, int t) { correlate(i, c, g, geo(d), t); }
void catneuron_correlate_f64(const double* i, const double* c, double* g, const i64* d, int t) { correlate(i, c, g, geo(d), t); }
}
