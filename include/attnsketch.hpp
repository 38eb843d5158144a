/*
 * attnsketch.hpp: header-only C++17 wrappers over the C ABI of attnsketch.h.
 *
 * Written by hand (not generated). Handles are std::unique_ptr with custom
 * deleters (as_free / as_bank_free), so they free themselves and move but
 * never copy; every non-AS_OK status becomes an attnsketch::error carrying
 * the status and as_status_string's text. Array arguments are
 * attnsketch::array_view<T> (a pointer and a count), built implicitly from
 * std::vector, std::array, C arrays, std::span or anything with data() and
 * size(); their sizes are checked against the handle's shape before the C
 * call, and a mismatch throws attnsketch::error with AS_ERR_INVALID_ARG
 * without calling the library. A moved-from object holds NULL: every call
 * on it throws (AS_ERR_NULL from the library), none is undefined.
 *
 * Link as the C library: pkg-config attnsketch, or CMake
 * find_package(attnsketch) and target attnsketch::attnsketch.
 */
#ifndef ATTNSKETCH_HPP
#define ATTNSKETCH_HPP

#include "attnsketch.h"

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace attnsketch {

/* A failed call: the library's status and its text. */
class error : public std::runtime_error {
  public:
    error(as_status status, const std::string &what)
        : std::runtime_error(what + ": " + as_status_string(status)), status_(status) {}
    /* The as_status the call returned (AS_ERR_INVALID_ARG for a size the wrapper refused). */
    as_status status() const noexcept { return status_; }
    /* as_status_string(status()): static text, never NULL. */
    const char *status_string() const noexcept { return as_status_string(status_); }

  private:
    as_status status_;
};

/* Throws attnsketch::error unless s == AS_OK; `what` names the call. */
inline void check(as_status s, const char *what) {
    if (s != AS_OK) throw error(s, what);
}

/* A non-owning view of n contiguous T (C++20's std::span converts into it). */
template <class T>
class array_view {
    template <class C>
    using data_t = decltype(std::data(std::declval<C &>()));
    template <class C>
    using enable_container = std::enable_if_t<
        !std::is_same<std::remove_cv_t<std::remove_reference_t<C>>, array_view>::value &&
        std::is_convertible<data_t<C>, T *>::value &&
        std::is_same<std::remove_cv_t<std::remove_pointer_t<data_t<C>>>, std::remove_cv_t<T>>::value>;

  public:
    constexpr array_view() noexcept = default;
    constexpr array_view(T *data, std::size_t size) noexcept : data_(data), size_(size) {}
    template <class C, class = enable_container<C>>
    constexpr array_view(C &&c) noexcept(noexcept(std::data(c)) && noexcept(std::size(c)))
        : data_(std::data(c)), size_(static_cast<std::size_t>(std::size(c))) {}
    constexpr T *data() const noexcept { return data_; }
    constexpr std::size_t size() const noexcept { return size_; }

  private:
    T *data_ = nullptr;
    std::size_t size_ = 0;
};

namespace detail {
struct sketch_deleter {
    void operator()(as_sketch *h) const noexcept { as_free(h); }
};
struct bank_deleter {
    void operator()(as_bank *b) const noexcept { as_bank_free(b); }
};

inline void expect_size(std::size_t got, std::size_t want, const char *call, const char *arg) {
    if (got != want)
        throw error(AS_ERR_INVALID_ARG, std::string(call) + ": " + arg + " has " + std::to_string(got) +
                                            " elements, expected " + std::to_string(want));
}

/* Rows in a batch: q.size() / per, which must divide it. */
inline std::size_t rows(std::size_t q_size, std::size_t per, const char *call) {
    if (per == 0 || q_size % per != 0)
        throw error(AS_ERR_INVALID_ARG, std::string(call) + ": q has " + std::to_string(q_size) +
                                            " elements, not a multiple of " + std::to_string(per));
    return q_size / per;
}

inline std::uint32_t read_u32_le(const std::uint8_t *p) noexcept {
    return std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 | std::uint32_t(p[2]) << 16 | std::uint32_t(p[3]) << 24;
}
} // namespace detail

/* Owning handle types, for code that mixes the wrappers with raw C calls. */
using sketch_ptr = std::unique_ptr<as_sketch, detail::sketch_deleter>;
using bank_ptr = std::unique_ptr<as_bank, detail::bank_deleter>;

/* as_config_init: defaults for a head of dimension head_dim. */
inline as_config default_config(std::uint32_t head_dim) {
    as_config c{};
    check(as_config_init(&c, head_dim), "as_config_init");
    return c;
}

/* as_config_for_budget: the most accurate config of at most `bytes` per
   head, keeping base's dims, scale and mode (the hybrid, README "Hybrid"). */
inline as_config budget_config(as_config base, std::size_t bytes) {
    check(as_config_for_budget(&base, bytes), "as_config_for_budget");
    return base;
}

inline const char *version_string() noexcept { return as_version_string(); }
inline const char *cpu_level_name() noexcept { return as_cpu_level_name(); }
inline void set_cpu_level(as_cpu_level level) { check(as_set_cpu_level(level), "as_set_cpu_level"); }

/* One attention head (as_sketch). Vectors: q, k of head_dim(); v, out of value_dim(). */
class Sketch {
  public:
    /* as_create. */
    explicit Sketch(const as_config &cfg) : d_(cfg.head_dim), dv_(cfg.value_dim) {
        as_sketch *h = nullptr;
        check(as_create(&cfg, &h), "as_create");
        h_.reset(h);
    }
    /* as_create_at_level: this handle's kernels at `level`. */
    Sketch(const as_config &cfg, as_cpu_level level) : d_(cfg.head_dim), dv_(cfg.value_dim) {
        as_sketch *h = nullptr;
        check(as_create_at_level(&cfg, level, &h), "as_create_at_level");
        h_.reset(h);
    }
    /* Adopts a handle from the C API (head_dim, value_dim as it was created with). */
    Sketch(sketch_ptr h, std::uint32_t head_dim, std::uint32_t value_dim) noexcept
        : h_(std::move(h)), d_(head_dim), dv_(value_dim) {}

    /* as_deserialize; the dims come from the buffer's CONF section (docs/format.md). */
    static Sketch deserialize(array_view<const std::uint8_t> bytes) {
        as_sketch *h = nullptr;
        check(as_deserialize(bytes.data(), bytes.size(), &h), "as_deserialize");
        sketch_ptr owned(h);
        // Accepted buffers start: magic 8, version 4, count 4, tag 4, length 8, CONF payload.
        const std::uint8_t *conf = bytes.data() + 28;
        return Sketch(std::move(owned), detail::read_u32_le(conf), detail::read_u32_le(conf + 4));
    }

    /* Causal: absorb (k, v), write the output of q over every token so far. */
    void push_token(array_view<const float> q, array_view<const float> k, array_view<const float> v,
                    array_view<float> out) {
        const char *c = "as_push_token";
        detail::expect_size(q.size(), d_, c, "q");
        detail::expect_size(k.size(), d_, c, "k");
        detail::expect_size(v.size(), dv_, c, "v");
        detail::expect_size(out.size(), dv_, c, "out");
        check(as_push_token(h_.get(), q.data(), k.data(), v.data(), out.data()), c);
    }
    /* n = q.size() / head_dim tokens, row-major; out must not overlap the inputs. */
    void push_tokens(array_view<const float> q, array_view<const float> k, array_view<const float> v,
                     array_view<float> out) {
        const char *c = "as_push_tokens";
        const std::size_t n = detail::rows(q.size(), d_, c);
        detail::expect_size(k.size(), n * d_, c, "k");
        detail::expect_size(v.size(), n * dv_, c, "v");
        detail::expect_size(out.size(), n * dv_, c, "out");
        check(as_push_tokens(h_.get(), n, q.data(), k.data(), v.data(), out.data()), c);
    }
    /* Non-causal: absorb (k, v). */
    void append_kv(array_view<const float> k, array_view<const float> v) {
        const char *c = "as_append_kv";
        detail::expect_size(k.size(), d_, c, "k");
        detail::expect_size(v.size(), dv_, c, "v");
        check(as_append_kv(h_.get(), k.data(), v.data()), c);
    }
    /* Non-causal: the output of q over everything absorbed (recorded). */
    void push_query(array_view<const float> q, array_view<float> out) {
        const char *c = "as_push_query";
        detail::expect_size(q.size(), d_, c, "q");
        detail::expect_size(out.size(), dv_, c, "out");
        check(as_push_query(h_.get(), q.data(), out.data()), c);
    }
    /* Read-only query (may run concurrently with other query calls). */
    void query(array_view<const float> q, array_view<float> out) const {
        const char *c = "as_query";
        detail::expect_size(q.size(), d_, c, "q");
        detail::expect_size(out.size(), dv_, c, "out");
        check(as_query(h_.get(), q.data(), out.data()), c);
    }
    /* as_serialize into a new vector (hybrid heads: AS_ERR_UNSUPPORTED). */
    std::vector<std::uint8_t> serialize() const {
        std::size_t n = 0;
        check(as_serialize(h_.get(), nullptr, 0, &n), "as_serialize");
        std::vector<std::uint8_t> buf(n);
        check(as_serialize(h_.get(), buf.data(), buf.size(), &n), "as_serialize");
        buf.resize(n);
        return buf;
    }
    /* as_merge: this absorbs src, as if src's tokens had followed. */
    void merge(const Sketch &src) { check(as_merge(h_.get(), src.h_.get()), "as_merge"); }

    std::uint64_t token_count() const noexcept { return as_token_count(h_.get()); }
    std::size_t state_bytes() const noexcept { return as_state_bytes(h_.get()); }
    std::uint64_t feature_count() const noexcept { return as_feature_count(h_.get()); }
    std::uint64_t fallback_count() const noexcept { return as_fallback_count(h_.get()); }
    /* NULL for a moved-from object. */
    const char *level_name() const noexcept { return as_sketch_level_name(h_.get()); }
    std::uint32_t head_dim() const noexcept { return d_; }
    std::uint32_t value_dim() const noexcept { return dv_; }
    as_sketch *get() const noexcept { return h_.get(); }
    /* Gives up ownership: the caller frees with as_free. */
    as_sketch *release() noexcept { return h_.release(); }

  private:
    sketch_ptr h_;
    std::uint32_t d_, dv_;
};

/* One layer (as_bank): q_heads() query heads over kv_heads() key/value
   states, causal. Head-major rows: q and out of q_heads() x (head_dim(),
   value_dim()), k and v of kv_heads() x (head_dim(), value_dim()). */
class Bank {
  public:
    /* as_bank_create. */
    Bank(const as_config &cfg, std::uint32_t q_heads, std::uint32_t kv_heads)
        : d_(cfg.head_dim), dv_(cfg.value_dim), nq_(q_heads), nkv_(kv_heads) {
        as_bank *b = nullptr;
        check(as_bank_create(&cfg, q_heads, kv_heads, &b), "as_bank_create");
        b_.reset(b);
    }

    /* One token for every head. */
    void push_token(array_view<const float> q, array_view<const float> k, array_view<const float> v,
                    array_view<float> out) {
        const char *c = "as_bank_push_token";
        detail::expect_size(q.size(), std::size_t(nq_) * d_, c, "q");
        detail::expect_size(k.size(), std::size_t(nkv_) * d_, c, "k");
        detail::expect_size(v.size(), std::size_t(nkv_) * dv_, c, "v");
        detail::expect_size(out.size(), std::size_t(nq_) * dv_, c, "out");
        check(as_bank_push_token(b_.get(), q.data(), k.data(), v.data(), out.data()), c);
    }
    /* n = q.size() / (q_heads * head_dim) tokens, token-major around head-major
       (a prefill); out must not overlap the inputs. */
    void push_tokens(array_view<const float> q, array_view<const float> k, array_view<const float> v,
                     array_view<float> out) {
        const char *c = "as_bank_push_tokens";
        const std::size_t n = detail::rows(q.size(), std::size_t(nq_) * d_, c);
        detail::expect_size(k.size(), n * nkv_ * d_, c, "k");
        detail::expect_size(v.size(), n * nkv_ * dv_, c, "v");
        detail::expect_size(out.size(), n * nq_ * dv_, c, "out");
        check(as_bank_push_tokens(b_.get(), n, q.data(), k.data(), v.data(), out.data()), c);
    }

    /* Every byte the bank owns (fixed at creation). */
    std::size_t state_bytes() const noexcept { return as_bank_state_bytes(b_.get()); }
    std::uint32_t q_heads() const noexcept { return nq_; }
    std::uint32_t kv_heads() const noexcept { return nkv_; }
    std::uint32_t head_dim() const noexcept { return d_; }
    std::uint32_t value_dim() const noexcept { return dv_; }
    as_bank *get() const noexcept { return b_.get(); }
    /* Gives up ownership: the caller frees with as_bank_free. */
    as_bank *release() noexcept { return b_.release(); }

  private:
    bank_ptr b_;
    std::uint32_t d_, dv_, nq_, nkv_;
};

} // namespace attnsketch

#endif /* ATTNSKETCH_HPP */
