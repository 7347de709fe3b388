// The element-wise steps of the recurrent cells on one row (one batch element,
// H hidden units), written once over a math policy P (csrc/cpu/rnn.cpp):
// P::V is one value (the Scalar policy) or eight floats (the AVX2 policy), and
// P provides load/store/set, sigmoid, tanh and relu. Each function handles the
// units [j, end) of a row of H units (gates H apart) in steps of P::width
// while whole vectors fit and returns where it stopped; the caller finishes
// the range with the Scalar policy.
//
// This file is included twice by csrc/cpu/rnn.cpp, in two namespaces: once
// compiled for the baseline ISA, once under `#pragma GCC target("avx2,fma")`,
// so it has no include guard and includes nothing itself.
//
// Gate order and equations are torch's (see csrc/rnn.h for what is saved).

// LSTM: gates [i, f, g, o] pre-activation in, activations out;
// c = f c_prev + i g, h = o tanh(c).
template <typename P, typename T>
int64_t lstm_forward_row(T* gates, const T* c_prev, T* h, T* c, int64_t j, int64_t end, int64_t H) {
  using V = typename P::V;
  for (; j + P::width <= end; j += P::width) {
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
                          T* d_gates, int64_t j, int64_t end, int64_t H) {
  using V = typename P::V;
  const V one = P::set(T(1)), zero = P::set(T(0));
  for (; j + P::width <= end; j += P::width) {
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
int64_t gru_forward_row(T* gates, const T* hidden, const T* h_prev, T* h, T* hn_out, int64_t j, int64_t end, int64_t H) {
  using V = typename P::V;
  for (; j + P::width <= end; j += P::width) {
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
                         T* d_hidden, int64_t j, int64_t end, int64_t H) {
  using V = typename P::V;
  const V one = P::set(T(1)), zero = P::set(T(0));
  for (; j + P::width <= end; j += P::width) {
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
int64_t rnn_forward_row(bool relu, T* gates, T* h, int64_t j, int64_t end, int64_t H) {
  using V = typename P::V;
  for (; j + P::width <= end; j += P::width) {
    const V x = P::load(gates + j);
    const V a = relu ? P::relu(x) : P::tanh(x);
    P::store(gates + j, a);
    P::store(h + j, a);
  }
  return j;
}

template <typename P, typename T>
int64_t rnn_backward_row(bool relu, const T* h, const T* grad_out, const T* dh, T* d_gates, int64_t j, int64_t end, int64_t H) {
  using V = typename P::V;
  const V one = P::set(T(1)), zero = P::set(T(0));
  for (; j + P::width <= end; j += P::width) {
    const V a = P::load(h + j);
    const V dht = P::load(dh + j) + (grad_out ? P::load(grad_out + j) : zero);
    P::store(d_gates + j, relu ? P::relu_grad(a, dht) : dht * (one - a * a));
  }
  return j;
}


// The units [u0, u1) of every row of one step: a thread's share of a step.
// FastMath<T>::type is the widest policy of this compilation (the includer
// defines it); the Scalar policy finishes each range.
template <typename T>
void forward_units(const CellStep<T>& s, int64_t u0, int64_t u1) {
  using Fast = typename FastMath<T>::type;
  using Slow = ScalarMath<T>;
  const int64_t H = s.H, GH = s.G * s.H;
  for (int64_t b = 0; b < s.B; ++b) {
    T* gb = s.gates + b * GH;
    T* hb = s.h + b * H;
    switch (s.mode) {
      case RnnMode::Lstm: {
        const T* cp = s.c_prev + b * H;
        T* cb = s.extra + b * H;
        const int64_t j = lstm_forward_row<Fast>(gb, cp, hb, cb, u0, u1, H);
        lstm_forward_row<Slow>(gb, cp, hb, cb, j, u1, H);
        break;
      }
      case RnnMode::Gru: {
        const T* hid = s.hidden + b * GH;
        const T* hp = s.h_prev + b * H;
        T* hn = s.extra + b * H;
        const int64_t j = gru_forward_row<Fast>(gb, hid, hp, hb, hn, u0, u1, H);
        gru_forward_row<Slow>(gb, hid, hp, hb, hn, j, u1, H);
        break;
      }
      default: {
        const bool relu = s.mode == RnnMode::Relu;
        const int64_t j = rnn_forward_row<Fast>(relu, gb, hb, u0, u1, H);
        rnn_forward_row<Slow>(relu, gb, hb, j, u1, H);
      }
    }
  }
}

template <typename T>
void backward_units(const CellGradStep<T>& s, int64_t u0, int64_t u1) {
  using Fast = typename FastMath<T>::type;
  using Slow = ScalarMath<T>;
  const int64_t H = s.H, GH = s.G * s.H;
  for (int64_t b = 0; b < s.B; ++b) {
    const T* ab = s.acts + b * GH;
    const T* gob = s.grad_out ? s.grad_out + b * s.grad_out_stride : nullptr;
    T* dhb = s.dh + b * H;
    T* dgb = s.d_gates + b * GH;
    switch (s.mode) {
      case RnnMode::Lstm: {
        T* dcb = s.dc + b * H;
        const T* cp = s.c_prev + b * H;
        const T* cb = s.extra + b * H;
        const int64_t j = lstm_backward_row<Fast>(ab, gob, dhb, dcb, cp, cb, dgb, u0, u1, H);
        lstm_backward_row<Slow>(ab, gob, dhb, dcb, cp, cb, dgb, j, u1, H);
        break;
      }
      case RnnMode::Gru: {
        const T* hp = s.h_prev + b * H;
        const T* hn = s.extra + b * H;
        T* dhid = s.d_hidden + b * GH;
        const int64_t j = gru_backward_row<Fast>(ab, gob, dhb, hp, hn, dgb, dhid, u0, u1, H);
        gru_backward_row<Slow>(ab, gob, dhb, hp, hn, dgb, dhid, j, u1, H);
        break;
      }
      default: {
        const bool relu = s.mode == RnnMode::Relu;
        const T* hb = s.h + b * H;
        const int64_t j = rnn_backward_row<Fast>(relu, hb, gob, dhb, dgb, u0, u1, H);
        rnn_backward_row<Slow>(relu, hb, gob, dhb, dgb, j, u1, H);
      }
    }
  }
}
