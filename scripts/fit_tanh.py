"""Fits the rational approximation of tanh that kernels/cpu_math.py
evaluates in float32, and prints its coefficients and errors.

tanh(a) = a P(s) / Q(s), s = a^2, on 0 <= a <= LIMIT (past it float32's
tanh is 1): P of degree 6 and Q of degree 3 in s, Q(0) = 1. The fit
minimises the largest relative error of P / Q against tanh(a) / a on a
dense grid: least squares with the denominator of the last iteration
divided out (Sanathanan-Koerner), its weights raised where the error is
largest (Lawson), in Chebyshev polynomials of 2 s / LIMIT^2 - 1 (monomials
in s are too ill-conditioned to solve for), then turned into Horner
coefficients in s. Prints the float64 fit's largest relative error and the
largest error in float32 units in the last place of a float32 Horner
evaluation without FMA: 5.3. The kernels contract to FMA where the CPU has
it, which here lowered it to 5.1 over every float32 from 2^-30 to 12;
tests/test_cpu_math.py checks the compiled function on every 13th.

    python scripts/fit_tanh.py [--limit 9.1] [--iterations 200]
"""

import argparse

import numpy as np
from numpy.polynomial import chebyshev, polynomial

DEGREE_P, DEGREE_Q = 6, 3


def fit(limit, iterations):
    """(P's and Q's coefficients in s, lowest first; the largest relative error)."""
    a = np.unique(np.concatenate([limit * np.sin(np.linspace(0, np.pi / 2, 200001)),
                                  np.linspace(0, limit, 100001)]))
    t = 2 * a * a / limit ** 2 - 1
    f = np.ones_like(a)
    f[a > 0] = np.tanh(a[a > 0]) / a[a > 0]
    Vp, Vq = chebyshev.chebvander(t, DEGREE_P), chebyshev.chebvander(t, DEGREE_Q)
    last_q, weights, best = np.ones_like(a), np.ones_like(a), None
    for _ in range(iterations):
        A = np.concatenate([Vp, -f[:, None] * Vq[:, 1:]], axis=1)
        scale = np.sqrt(weights) / (f * last_q)
        coef = np.linalg.lstsq(A * scale[:, None], f * Vq[:, 0] * scale, rcond=None)[0]
        p, q = coef[:DEGREE_P + 1], np.concatenate([[1.0], coef[DEGREE_P + 1:]])
        last_q = chebyshev.chebval(t, q)
        error = np.abs(chebyshev.chebval(t, p) / last_q / f - 1)
        if best is None or error.max() < best[2]:
            best = (p, q, error.max())
        weights = weights * np.sqrt(error / error.max()) + 1e-12
        weights /= weights.max()
    p, q, worst = best
    return in_s(p, limit), in_s(q, limit), worst


def in_s(cheb, limit):
    """Chebyshev coefficients in t = 2 s / limit^2 - 1 as monomials in s."""
    in_t = chebyshev.cheb2poly(cheb)
    out = np.zeros(len(in_t))
    for i, c in enumerate(in_t):
        term = polynomial.polypow([-1.0, 2.0 / limit ** 2], i)
        out[:len(term)] += c * term
    return out


def float32_tanh(x, p, q, limit):
    """The kernels' evaluation, in float32 without FMA."""
    x = x.astype(np.float32)
    a = np.minimum(np.abs(x), np.float32(limit))
    s = a * a
    num, den = np.float32(p[-1]), np.float32(q[-1])
    for c in p[-2::-1]:
        num = num * s + np.float32(c)
    for c in q[-2::-1]:
        den = den * s + np.float32(c)
    r = np.maximum(np.minimum(a * num / den, np.float32(1)), (a >= limit).astype(np.float32))
    return np.copysign(r, x)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=float, default=9.1)
    parser.add_argument("--iterations", type=int, default=200)
    args = parser.parse_args()
    p, q, worst = fit(args.limit, args.iterations)
    q0 = q[0]
    p, q = p / q0, q / q0
    print("P:", ", ".join(repr(float(c)) for c in p))
    print("Q:", ", ".join(repr(float(c)) for c in q))
    print(f"largest relative error of the float64 fit: {worst:.3g}")
    ulps = 0.0
    for e in range(-30, 4):
        x = np.linspace(2.0 ** e, 2.0 ** (e + 1), 1_000_001).astype(np.float32)
        exact = np.tanh(x.astype(np.float64))
        ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
        got = float32_tanh(x, p, q, args.limit).astype(np.float64)
        ulps = max(ulps, (np.abs(got - exact) / ulp).max())
    print(f"largest error of the float32 evaluation (no FMA), 2^-30..16: {ulps:.2f} ulp")


if __name__ == "__main__":
    main()
