// momenta's per-step checks and gradient gathering, one C++ call each instead of a Python
// pass per tensor (a few hundred nanoseconds each: with 600 parameters, more than the update).
// And the lower median of momenta.inspect's samples (radix_median, below).
//
// Built at run time by momenta.engine.compat (Inductor's C++ code cache, torch's headers),
// called through ctypes.PyDLL, which holds the GIL. Every function only reads until all of
// its checks have passed, and answers "not the usual case" (0 / false) for anything it does
// not know: the caller then takes its Python path, which gives torch's errors.
#include <Python.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/csrc/autograd/python_variable.h>

namespace {

// A plain tensor whose bytes can be copied: no subclass dispatch, no lazy conj or neg bit.
bool plain(const at::Tensor& t) {
    return t.defined() && t.layout() == at::kStrided && !t.is_conj() && !t.is_neg() &&
           !t.key_set().has(c10::DispatchKey::Python) && t.has_storage();
}

bool same_kind(const at::Tensor& a, const at::Tensor& b) {
    return a.scalar_type() == b.scalar_type() && a.device() == b.device();
}

}  // namespace

// Every params[i] is a tensor whose data starts at ptrs[i] (nothing moved it: model.to,
// p.data = ...). 1 yes, 0 no.
extern "C" int64_t momenta_holds(PyObject* params, const int64_t* ptrs) {
    if (!PyList_CheckExact(params)) return 0;
    const Py_ssize_t n = PyList_GET_SIZE(params);
    for (Py_ssize_t i = 0; i < n; ++i) {
        PyObject* o = PyList_GET_ITEM(params, i);
        if (!THPVariable_Check(o)) return 0;
        const at::Tensor& p = THPVariable_Unpack(o);
        if (!p.has_storage() || reinterpret_cast<int64_t>(p.const_data_ptr()) != ptrs[i]) return 0;
    }
    return 1;
}

// The values of dicts (a list of dicts), in order, are exactly the objects of held (a list):
// the state views handed out are still what optimizer.state holds. 1 yes, 0 no.
extern "C" int64_t momenta_same_values(PyObject* dicts, PyObject* held) {
    if (!PyList_CheckExact(dicts) || !PyList_CheckExact(held)) return 0;
    const Py_ssize_t n = PyList_GET_SIZE(dicts), total = PyList_GET_SIZE(held);
    Py_ssize_t k = 0;
    for (Py_ssize_t i = 0; i < n; ++i) {
        PyObject* d = PyList_GET_ITEM(dicts, i);
        if (!PyDict_CheckExact(d)) return 0;
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        while (PyDict_Next(d, &pos, &key, &value)) {
            if (k >= total || value != PyList_GET_ITEM(held, k)) return 0;
            ++k;
        }
    }
    return k == total;
}

// The gradients of params (a list of parameters) against their regions of a flat gradient
// buffer: regions[i], shaped and strided like params[i], or None for a large parameter
// (large[i] != 0), whose gradient is used where autograd put it: those are appended to the
// list used, in order, as 1-D views of their elements in memory order. Returns
//   1: every small gradient is its region (accumulated in place): nothing copied;
//   2: every small gradient is fresh, a plain tensor of its region's dtype, device and shape,
//      strided like its region (or both contiguous): copied into its region;
//   0: anything else (a region off the CPU too: its bytes are not ours to memcpy), or a
//      large gradient that is not a plain tensor of its parameter's dtype, device, shape
//      and strides; nothing was copied.
extern "C" int64_t momenta_gather(PyObject* params, PyObject* regions, const uint8_t* large, PyObject* used) {
    if (!PyList_CheckExact(params) || !PyList_CheckExact(regions) || !PyList_CheckExact(used)) return 0;
    const Py_ssize_t n = PyList_GET_SIZE(params);
    if (n == 0 || PyList_GET_SIZE(regions) != n) return 0;
    std::vector<const at::Tensor*> grads(n);
    Py_ssize_t small = 0, in_place = 0;
    for (Py_ssize_t i = 0; i < n; ++i) {
        PyObject* p = PyList_GET_ITEM(params, i);
        if (!THPVariable_Check(p)) return 0;
        const at::Tensor& param = THPVariable_Unpack(p);
        const at::Tensor& g = param.grad();
        if (!g.defined()) return 0;
        grads[i] = &g;
        if (large[i]) {
            if (!plain(g) || !same_kind(g, param) || g.sizes() != param.sizes() || g.strides() != param.strides())
                return 0;
            continue;
        }
        ++small;
        PyObject* r = PyList_GET_ITEM(regions, i);
        if (!THPVariable_Check(r)) return 0;
        const at::Tensor& region = THPVariable_Unpack(r);
        if (g.unsafeGetTensorImpl() == region.unsafeGetTensorImpl()) {
            ++in_place;
            continue;
        }
        if (!region.is_cpu() || !plain(g) || !same_kind(g, region) || g.sizes() != region.sizes()) return 0;
        if (!(g.strides() == region.strides() || (g.is_contiguous() && region.is_contiguous()))) return 0;
    }
    if (in_place != 0 && in_place != small) return 0;
    for (Py_ssize_t i = 0; i < n; ++i) {
        if (!large[i]) continue;
        const at::Tensor& g = *grads[i];
        PyObject* view = THPVariable_Wrap(g.as_strided({g.numel()}, {1}, g.storage_offset()));
        if (view == nullptr || PyList_Append(used, view) != 0) {
            Py_XDECREF(view);
            PyErr_Clear();
            return 0;
        }
        Py_DECREF(view);
    }
    if (in_place == small) return 1;
    std::vector<char*> dst;
    std::vector<const char*> src;
    std::vector<int64_t> nbytes;
    int64_t total = 0;
    for (Py_ssize_t i = 0; i < n; ++i) {
        if (large[i]) continue;
        const at::Tensor& region = THPVariable_Unpack(PyList_GET_ITEM(regions, i));
        dst.push_back(static_cast<char*>(region.mutable_data_ptr()));
        src.push_back(static_cast<const char*>(grads[i]->const_data_ptr()));
        nbytes.push_back(region.numel() * static_cast<int64_t>(region.element_size()));
        total += nbytes.back();
    }
    const int64_t count = static_cast<int64_t>(dst.size());
    const int64_t grain = total > (int64_t{1} << 20) ? std::max<int64_t>(1, count * (int64_t{1} << 18) / total) : count;
    at::parallel_for(0, count, grain, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) std::memcpy(dst[i], src[i], static_cast<size_t>(nbytes[i]));
    });
    return 2;
}

namespace {

// The lower median of x[0..n) without its NaNs: the ⌊(k−1)/2⌋-th smallest of the k others,
// as torch.median takes it; NaN where k = 0. A radix select: each value's bits become a key
// that orders as the value does (a sign bit set: all bits flipped; else the sign bit set),
// a histogram of the key's top 11 bits finds the bin that holds the median and its rank
// there, and the next 11 bits are counted among that bin's keys alone, until every bit is
// known. No comparison decides a branch on the data, so fresh data costs what the same data
// costs (quickselect, torch's median on the CPU, mispredicts about half its branches: ~10 ns
// an element on data it has not seen).
template <typename F, typename U>
double radix_median(const F* x, int64_t n) {
    constexpr int bits = static_cast<int>(sizeof(U)) * 8;
    constexpr int digit = 11;
    constexpr U top = U{1} << (bits - 1);
    thread_local std::vector<U> keys;
    keys.resize(static_cast<size_t>(n));
    std::vector<int64_t> count(size_t{1} << digit);
    int shift = bits - digit;
    int64_t kept = 0;
    for (int64_t i = 0; i < n; ++i) {  // the keys and the first histogram, in one pass
        U u;
        std::memcpy(&u, &x[i], sizeof(U));
        const U key = (u & top) ? static_cast<U>(~u) : static_cast<U>(u | top);
        const bool number = x[i] == x[i];
        keys[static_cast<size_t>(kept)] = key;
        kept += number;
        count[static_cast<size_t>(key >> shift)] += number;
    }
    if (kept == 0) return static_cast<double>(std::numeric_limits<F>::quiet_NaN());
    int64_t rank = (kept - 1) / 2;
    U prefix = 0;
    int width = digit;
    while (true) {
        size_t bin = 0;
        while (rank >= count[bin]) rank -= count[bin++];
        prefix |= static_cast<U>(bin) << shift;
        if (shift == 0) break;
        const U mask = static_cast<U>((U{1} << width) - 1);
        int64_t inside = 0;  // the keys of that bin, to the front
        for (int64_t i = 0; i < kept; ++i) {
            const U key = keys[static_cast<size_t>(i)];
            keys[static_cast<size_t>(inside)] = key;
            inside += ((key >> shift) & mask) == bin;
        }
        kept = inside;
        width = std::min(digit, shift);
        shift -= width;
        std::fill(count.begin(), count.end(), 0);
        const U low = static_cast<U>((U{1} << width) - 1);
        for (int64_t i = 0; i < kept; ++i) ++count[static_cast<size_t>((keys[static_cast<size_t>(i)] >> shift) & low)];
    }
    const U u = (prefix & top) ? static_cast<U>(prefix & ~top) : static_cast<U>(~prefix);
    F value;
    std::memcpy(&value, &u, sizeof(F));
    return static_cast<double>(value);
}

}  // namespace

extern "C" double momenta_median_f32(const float* x, int64_t n) { return radix_median<float, uint32_t>(x, n); }

extern "C" double momenta_median_f64(const double* x, int64_t n) { return radix_median<double, uint64_t>(x, n); }
