// An empty Python module: `import d2l_ext._C` loads this shared library, whose
// static initialisers run the TORCH_LIBRARY registrations. The ops themselves
// are reached through torch.ops.d2l_ext.*, not through Python bindings.
#include <Python.h>

PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr, nullptr, nullptr, nullptr, nullptr};
  return PyModule_Create(&module_def);
}
