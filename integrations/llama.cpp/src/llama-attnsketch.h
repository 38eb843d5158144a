#pragma once

// attnsketch inside llama.cpp: the full-attention layers chosen by the
// ATTNSKETCH_* environment variables compute attention through libattnsketch
// instead of a KV cache. Each sketched layer holds one `as_bank` per kv head
// (n_head / n_head_kv query heads over one key/value state), fed from a ggml
// custom op with the ubatch's post-RoPE Q, K, V: prefill and decode both go
// through `as_bank_push_tokens`. The KV cache allocates nothing for these
// layers. Only what a fixed-size state can serve is accepted: one sequence,
// tokens appended at the next position, and removal of everything; any other
// memory edit is refused and blocks decoding until the memory is cleared.
// (integrations/llama.cpp/README.md in the attnsketch repository.)

#include "llama.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

struct ggml_context;
struct ggml_tensor;
struct llama_hparams;
struct llama_ubatch;
struct llama_attnsketch_layer;
class llama_io_write_i;
class llama_io_read_i;

class llama_attnsketch {
public:
    // nullptr when no ATTNSKETCH_* setting is given (the build then behaves as
    // upstream); throws std::runtime_error on invalid settings or a context the
    // sketch cannot serve (several sequences, non-causal, unknown architecture).
    static std::shared_ptr<llama_attnsketch> from_env(
            const llama_hparams & hparams, const char * arch, uint32_t n_ctx, uint32_t n_seq_max,
            bool causal, ggml_type type_k, ggml_type type_v);

    ~llama_attnsketch();

    bool sketched(int32_t il) const;

    // filter for the KV cache: keep a layer only if `prev` keeps it and it is not sketched
    std::function<bool(int32_t)> kv_filter(std::function<bool(int32_t)> prev) const;

    // attention output of layer il, [n_embd_head_v * n_head, n_tokens], from
    // q [d, n_head, n_tokens], k [d, n_head_kv, n_tokens], v [dv, n_head_kv, n_tokens]
    ggml_tensor * build(ggml_context * ctx, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v,
            float kq_scale, int32_t il);

    // before computing a ubatch: false (logged) unless it is sequence 0 continuing at the token count
    bool begin_ubatch(const llama_ubatch & ub);
    // after computing it: false (logged; decoding blocked) unless every sketched layer absorbed it
    bool end_ubatch(const llama_ubatch & ub, bool computed);

    // memory operations; false = refused with the documented message (decoding blocked until clear)
    void clear();
    bool seq_rm  (llama_seq_id seq_id, llama_pos p0, llama_pos p1);
    bool seq_cp  (llama_seq_id seq_id_src, llama_seq_id seq_id_dst, llama_pos p0, llama_pos p1);
    bool seq_keep(llama_seq_id seq_id);
    bool seq_add (llama_seq_id seq_id, llama_pos p0, llama_pos p1, llama_pos shift);
    bool seq_div (llama_seq_id seq_id, llama_pos p0, llama_pos p1, int d);

    // session save/load (llama_state_* and llama_state_seq_* of sequence 0): the KV cache writes
    // the banks' as_bank_serialize forms after its own data and reads them back. `check_state_seq`
    // throws for another sequence (the llama_state_* call then fails with that message);
    // `state_read` throws, leaving the banks as they were but decoding blocked until clear(), if
    // the saved state was made with other settings, is corrupt, or does not hold `cache_tokens`.
    void check_state_seq(llama_seq_id seq_id, const char * what) const;
    void state_write(llama_io_write_i & io) const;
    void state_read(llama_io_read_i & io, int64_t cache_tokens);

private:
    llama_attnsketch() = default;

    bool refuse(const std::string & what);
    bool reset_banks();

    std::vector<std::unique_ptr<llama_attnsketch_layer>> layers; // indexed by il; nullptr = not sketched
    uint32_t n_ctx  = 0;
    int64_t  n_past = 0;      // tokens absorbed by every sketched layer
    bool     broken = false;  // a refused edit or failed push: decode refused until clear()
};
