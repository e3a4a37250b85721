// Elementwise arithmetic with NumPy broadcasting, and the elementary functions.
#pragma once

#include "autograd/tape.h"

namespace tapegrad {

// Broadcasting binary ops: out has broadcast_shapes(a, b).
Var add(const Var& a, const Var& b);
Var sub(const Var& a, const Var& b);
Var mul(const Var& a, const Var& b);
Var div(const Var& a, const Var& b);
Var neg(const Var& x);

// Scalar forms: x + s, x * s, s - x, s / x.
Var add_scalar(const Var& x, double s);
Var mul_scalar(const Var& x, double s);
Var rsub_scalar(double s, const Var& x);
Var rdiv_scalar(double s, const Var& x);

Var pow(const Var& x, double exponent);  // x^p for x > 0 (or integer p)
Var square(const Var& x);
Var sqrt(const Var& x);
Var exp(const Var& x);
Var log(const Var& x);
Var log1p(const Var& x);
Var abs(const Var& x);                  // gradient sign(x), 0 at 0
Var clamp(const Var& x, double low, double high);  // gradient 1 strictly inside (low, high), else 0

inline Var operator+(const Var& a, const Var& b) { return add(a, b); }
inline Var operator-(const Var& a, const Var& b) { return sub(a, b); }
inline Var operator*(const Var& a, const Var& b) { return mul(a, b); }
inline Var operator/(const Var& a, const Var& b) { return div(a, b); }
inline Var operator-(const Var& x) { return neg(x); }
inline Var operator+(const Var& x, double s) { return add_scalar(x, s); }
inline Var operator+(double s, const Var& x) { return add_scalar(x, s); }
inline Var operator-(const Var& x, double s) { return add_scalar(x, -s); }
inline Var operator-(double s, const Var& x) { return rsub_scalar(s, x); }
inline Var operator*(const Var& x, double s) { return mul_scalar(x, s); }
inline Var operator*(double s, const Var& x) { return mul_scalar(x, s); }
inline Var operator/(const Var& x, double s) { return mul_scalar(x, 1.0 / s); }
inline Var operator/(double s, const Var& x) { return rdiv_scalar(s, x); }

}  // namespace tapegrad
