# The N-API addon of netpold's TPROXY data plane (see src/netpold_native.cc).
# Built by native/build.mjs (the package's "install" script), which always passes --nodedir.
{
  "targets": [
    {
      "target_name": "netpold_native",
      "sources": ["src/netpold_native.cc"],
      "dependencies": ["<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"],
      "defines": ["NAPI_VERSION=8"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
