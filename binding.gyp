{
  "targets": [{
    "target_name": "kiln",
    "sources": ["<!@(node scripts/native-sources.js)"],
    "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
    "defines": ["NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
    "cflags!": ["-fno-exceptions"],
    "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17"],
    "cflags_cc": ["-std=c++17", "-O3", "-fexceptions", "-fopenmp", "-march=x86-64-v2", "-fno-math-errno", "-fno-trapping-math"],
    "ldflags": ["-fopenmp"],
    "conditions": [
      ["'<!(node scripts/find-library.js openblas)'!=''", {
        "defines": ["KILN_OPENBLAS"],
        "include_dirs": ["<!(node scripts/find-library.js openblas)"],
        "libraries": ["-lopenblas"]
      }],
      ["'<!(node scripts/find-library.js gloo)'!=''", {
        "defines": ["KILN_GLOO"],
        "include_dirs": ["<!(node scripts/find-library.js gloo)"],
        "libraries": ["-lgloo"]
      }]
    ]
  }]
}
