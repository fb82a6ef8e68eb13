{
  "targets": [
    {
      "target_name": "edge_native",
      "sources": ["edge_native.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    }
  ]
}
