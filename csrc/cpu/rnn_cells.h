// The element-wise steps of the recurrent cells on one row (one batch element,
// H hidden units), written once over a math policy P (csrc/cpu/rnn.cpp):
// P::V is one value (the Scalar policy) or eight floats (the AVX2 policy), and
// P provides load/store/set, sigmoid, tanh and relu. Each function handles the
// units [j, H) in steps of P::width while whole vectors fit and returns where
// it stopped; the caller finishes the row with the Scalar policy.
//
// This file is included twice by csrc/cpu/rnn.cpp, in two namespaces: once
// compiled for the baseline ISA, once under `#pragma GCC target("avx2,fma")`,
// so it has no include guard and includes nothing itself.
//
// Gate order and equations are torch's (see csrc/rnn.h for what is saved).

// LSTM: gates [i, f, g, o] pre-activation in, activations out;
// c = f c_prev + i g, h = o tanh(c).
template <typename P, typename T>
int64_t lstm_forward_row(T* gates, const T* c_prev, T* h, T* c, int64_t j, int64_t H) {
  using V = typename P::V;
  for (; j + P::width <= H; j += P::width) {
    const V i = P::sigmoid(P::load(gates + j));
    const V f = P::sigmoid(P::load(gates + H + j));
    const V g = P::tanh(P::load(gates + 2 * H + j));
    const V o = P::sigmoid(P::load(gates + 3 * H + j));
    const V cn = f * P::load(c_prev + j) + i * g;
    P::store(gates + j, i);
    P::store(gates + H + j, f);
    P::store(gates + 2 * H + j, g);
    P::store(gates + 3 * H + j, o);
    P::store(c + j, cn);
    P::store(h + j, o * P::tanh(cn));
  }
  return j;
}

// LSTM backward: dh_t = dh + grad_out, dc_t = dc + dh_t o (1 - tanh(c)^2);
// writes the pre-activation gate gradients and dc <- dc_t f.
template <typename P, typename T>
int64_t lstm_backward_row(const T* acts, const T* grad_out, const T* dh, T* dc, const T* c_prev, const T* c,
                          T* d_gates, int64_t j, int64_t H) {
  using V = typename P::V;
  const V one = P::set(T(1)), zero = P::set(T(0));
  for (; j + P::width <= H; j += P::width) {
    const V i = P::load(acts + j), f = P::load(acts + H + j), g = P::load(acts + 2 * H + j),
            o = P::load(acts + 3 * H + j);
    const V dht = P::load(dh + j) + (grad_out ? P::load(grad_out + j) : zero);
    const V tc = P::tanh(P::load(c + j));
    const V dct = P::load(dc + j) + dht * o * (one - tc * tc);
    P::store(d_gates + j, dct * g * i * (one - i));
    P::store(d_gates + H + j, dct * P::load(c_prev + j) * f * (one - f));
    P::store(d_gates + 2 * H + j, dct * i * (one - g * g));
    P::store(d_gates + 3 * H + j, dht * tc * o * (one - o));
    P::store(dc + j, dct * f);
  }
  return j;
}

// GRU: gates [r, z, n] of the input projection (+ b_ih) in, activations out;
// hidden = W_hh h_prev + b_hh. r = sigmoid(x_r + h_r), z = sigmoid(x_z + h_z),
// n = tanh(x_n + r h_n), h = (1 - z) n + z h_prev; saves h_n.
template <typename P, typename T>
int64_t gru_forward_row(T* gates, const T* hidden, const T* h_prev, T* h, T* hn_out, int64_t j, int64_t H) {
  using V = typename P::V;
  for (; j + P::width <= H; j += P::width) {
    const V r = P::sigmoid(P::load(gates + j) + P::load(hidden + j));
    const V z = P::sigmoid(P::load(gates + H + j) + P::load(hidden + H + j));
    const V hn = P::load(hidden + 2 * H + j);
    const V n = P::tanh(P::load(gates + 2 * H + j) + r * hn);
    const V hp = P::load(h_prev + j);
    P::store(gates + j, r);
    P::store(gates + H + j, z);
    P::store(gates + 2 * H + j, n);
    P::store(hn_out + j, hn);
    P::store(h + j, n + z * (hp - n));
  }
  return j;
}

// GRU backward: writes the gradients of the input-side gates (d_gates) and of
// W_hh h_prev + b_hh (d_hidden; its n part is the input side's times r), and
// dh <- z dh_t (the part of dh_{t-1} that skips W_hh).
template <typename P, typename T>
int64_t gru_backward_row(const T* acts, const T* grad_out, T* dh, const T* h_prev, const T* hn, T* d_gates,
                         T* d_hidden, int64_t j, int64_t H) {
  using V = typename P::V;
  const V one = P::set(T(1)), zero = P::set(T(0));
  for (; j + P::width <= H; j += P::width) {
    const V r = P::load(acts + j), z = P::load(acts + H + j), n = P::load(acts + 2 * H + j);
    const V dht = P::load(dh + j) + (grad_out ? P::load(grad_out + j) : zero);
    const V dn = dht * (one - z) * (one - n * n);
    const V dr = dn * P::load(hn + j) * r * (one - r);
    const V dz = dht * (P::load(h_prev + j) - n) * z * (one - z);
    P::store(d_gates + j, dr);
    P::store(d_gates + H + j, dz);
    P::store(d_gates + 2 * H + j, dn);
    P::store(d_hidden + j, dr);
    P::store(d_hidden + H + j, dz);
    P::store(d_hidden + 2 * H + j, dn * r);
    P::store(dh + j, dht * z);
  }
  return j;
}

// Elman RNN: h = tanh(gates) or relu(gates); the activation is saved in place.
template <typename P, typename T>
int64_t rnn_forward_row(bool relu, T* gates, T* h, int64_t j, int64_t H) {
  using V = typename P::V;
  for (; j + P::width <= H; j += P::width) {
    const V x = P::load(gates + j);
    const V a = relu ? P::relu(x) : P::tanh(x);
    P::store(gates + j, a);
    P::store(h + j, a);
  }
  return j;
}

template <typename P, typename T>
int64_t rnn_backward_row(bool relu, const T* h, const T* grad_out, const T* dh, T* d_gates, int64_t j, int64_t H) {
  using V = typename P::V;
  const V one = P::set(T(1)), zero = P::set(T(0));
  for (; j + P::width <= H; j += P::width) {
    const V a = P::load(h + j);
    const V dht = P::load(dh + j) + (grad_out ? P::load(grad_out + j) : zero);
    P::store(d_gates + j, relu ? P::relu_grad(a, dht) : dht * (one - a * a));
  }
  return j;
}

// One step over all rows, split across threads when a step is large enough to
// pay for it. FastMath<T>::type is the widest policy of this compilation (the
// includer defines it); the Scalar policy finishes each row.
inline int64_t rows_per_task(int64_t row_elems) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, row_elems)); }

template <typename T>
void forward_step(const RnnStepForward& s) {
  using Fast = typename FastMath<T>::type;
  using Slow = ScalarMath<T>;
  const int64_t B = s.h.size(0), H = s.h.size(1), G = rnn_gates(s.mode);
  T* gates = s.gates.data_ptr<T>();
  T* h = s.h.data_ptr<T>();
  const T* h_prev = s.h_prev.data_ptr<T>();
  T* extra = s.extra.defined() ? s.extra.data_ptr<T>() : nullptr;
  const T* c_prev = s.c_prev.defined() ? s.c_prev.data_ptr<T>() : nullptr;
  const T* hidden = s.hidden.defined() ? s.hidden.data_ptr<T>() : nullptr;
  at::parallel_for(0, B, rows_per_task(G * H), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      T* gb = gates + b * G * H;
      T* hb = h + b * H;
      switch (s.mode) {
        case RnnMode::Lstm: {
          const T* cp = c_prev + b * H;
          T* cb = extra + b * H;
          const int64_t j = lstm_forward_row<Fast>(gb, cp, hb, cb, 0, H);
          lstm_forward_row<Slow>(gb, cp, hb, cb, j, H);
          break;
        }
        case RnnMode::Gru: {
          const T* hid = hidden + b * G * H;
          const T* hp = h_prev + b * H;
          T* hn = extra + b * H;
          const int64_t j = gru_forward_row<Fast>(gb, hid, hp, hb, hn, 0, H);
          gru_forward_row<Slow>(gb, hid, hp, hb, hn, j, H);
          break;
        }
        default: {
          const bool relu = s.mode == RnnMode::Relu;
          const int64_t j = rnn_forward_row<Fast>(relu, gb, hb, 0, H);
          rnn_forward_row<Slow>(relu, gb, hb, j, H);
        }
      }
    }
  });
}

template <typename T>
void backward_step(const RnnStepBackward& s) {
  using Fast = typename FastMath<T>::type;
  using Slow = ScalarMath<T>;
  const int64_t B = s.dh.size(0), H = s.dh.size(1), G = rnn_gates(s.mode);
  const T* acts = s.acts.data_ptr<T>();
  const T* grad_out = s.grad_out.defined() ? s.grad_out.data_ptr<T>() : nullptr;
  const int64_t go_stride = s.grad_out.defined() ? s.grad_out.stride(0) : 0;
  T* dh = s.dh.data_ptr<T>();
  T* dc = s.dc.defined() ? s.dc.data_ptr<T>() : nullptr;
  const T* h_prev = s.h_prev.data_ptr<T>();
  const T* c_prev = s.c_prev.defined() ? s.c_prev.data_ptr<T>() : nullptr;
  const T* h = s.h.data_ptr<T>();
  const T* extra = s.extra.defined() ? s.extra.data_ptr<T>() : nullptr;
  T* d_gates = s.d_gates.data_ptr<T>();
  T* d_hidden = s.d_hidden.data_ptr<T>();
  at::parallel_for(0, B, rows_per_task(G * H), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const T* ab = acts + b * G * H;
      const T* gob = grad_out ? grad_out + b * go_stride : nullptr;
      T* dhb = dh + b * H;
      T* dgb = d_gates + b * G * H;
      switch (s.mode) {
        case RnnMode::Lstm: {
          T* dcb = dc + b * H;
          const T* cp = c_prev + b * H;
          const T* cb = extra + b * H;
          const int64_t j = lstm_backward_row<Fast>(ab, gob, dhb, dcb, cp, cb, dgb, 0, H);
          lstm_backward_row<Slow>(ab, gob, dhb, dcb, cp, cb, dgb, j, H);
          break;
        }
        case RnnMode::Gru: {
          const T* hp = h_prev + b * H;
          const T* hn = extra + b * H;
          T* dhid = d_hidden + b * G * H;
          const int64_t j = gru_backward_row<Fast>(ab, gob, dhb, hp, hn, dgb, dhid, 0, H);
          gru_backward_row<Slow>(ab, gob, dhb, hp, hn, dgb, dhid, j, H);
          break;
        }
        default: {
          const bool relu = s.mode == RnnMode::Relu;
          const T* hb = h + b * H;
          const int64_t j = rnn_backward_row<Fast>(relu, hb, gob, dhb, dgb, 0, H);
          rnn_backward_row<Slow>(relu, hb, gob, dhb, dgb, j, H);
        }
      }
    }
  });
}
