/* Marker search in JPEG entropy-coded data.
 *
 * Why hand-written: checking that a JPEG is complete (every scan present) and where its first
 * image ends means reading every byte after the first scan header, for every image the
 * pipeline sees. A 0xFF in entropy data is rare (about one byte in 256), so looking for it
 * with memchr (vectorised in glibc) and testing the byte after it is far cheaper than Python's
 * regex engine, which steps through the data one byte at a time (0.20 ms per photo).
 * stream/image_decode.py falls back to the regular expressions when this module is not built;
 * tests hold both to the same answers.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* First i >= start with data[i] == 0xFF and data[i + 1] accepted by kind, or -1.
 * kind 0: data[i + 1] == 0xD9 (EOI).
 * kind 1: data[i + 1] is a marker code: not a stuffed 0x00, not RST0-7, not a fill 0xFF. */
static Py_ssize_t find_marker(const unsigned char *buf, Py_ssize_t n, Py_ssize_t start, int kind)
{
    Py_ssize_t i = start < 0 ? 0 : start;
    while (i + 1 < n) {
        const unsigned char *p = memchr(buf + i, 0xFF, (size_t)(n - 1 - i));
        if (p == NULL)
            return -1;
        i = p - buf;
        unsigned char next = buf[i + 1];
        if (kind == 0 ? next == 0xD9 : (next != 0x00 && next != 0xFF && (next < 0xD0 || next > 0xD7)))
            return i;
        i++;
    }
    return -1;
}

static PyObject *py_find_marker(PyObject *self, PyObject *args)
{
    Py_buffer data;
    Py_ssize_t start;
    int kind;
    if (!PyArg_ParseTuple(args, "y*ni", &data, &start, &kind))
        return NULL;
    if (kind != 0 && kind != 1) {
        PyBuffer_Release(&data);
        PyErr_SetString(PyExc_ValueError, "find_marker: kind must be 0 (EOI) or 1 (any marker)");
        return NULL;
    }
    Py_ssize_t found;
    Py_BEGIN_ALLOW_THREADS
    found = find_marker((const unsigned char *)data.buf, data.len, start, kind);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    return PyLong_FromSsize_t(found);
}

static PyMethodDef methods[] = {
    {"find_marker", py_find_marker, METH_VARARGS,
     "find_marker(data, start, kind): offset of the first 0xFF at or after start that begins an "
     "EOI (kind 0) or any marker that may end entropy-coded data (kind 1); -1 when there is none."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_jpeg_markers", NULL, -1, methods};

PyMODINIT_FUNC PyInit__jpeg_markers(void) { return PyModule_Create(&module); }
