#!/usr/bin/env bash
# Install NVIDIA's real TensorRT Python bindings for VERSION into DIR so they import without a GPU:
# the PyPI wheel tensorrt-cu12-bindings plus three stub libraries (libnvinfer, libnvinfer_plugin,
# libnvonnxparser) that define the nine C symbols the bindings need and return null. The result is
# an oracle for names, signatures and enum values only, never for behaviour.
#   tools/trt_oracle.sh 10.16.1.11 .cache/trt-oracle
#   RESNET_DEPLOY_TRT_ORACLE=.cache/trt-oracle python -m pytest tests/test_fakes_match_real.py
set -euo pipefail
version=${1:?usage: trt_oracle.sh VERSION DIR}
dir=${2:?usage: trt_oracle.sh VERSION DIR}
major=${version%%.*}
mkdir -p "$dir/lib"
python -m pip install --quiet --no-deps --target "$dir" "tensorrt-cu12-bindings==$version"
cat > "$dir/lib/stub.c" <<'C'
void *createInferBuilder_INTERNAL(void *logger, int version) { return 0; }
void *createInferRefitter_INTERNAL(void *engine, void *logger, int version) { return 0; }
void *createInferRuntime_INTERNAL(void *logger, int version) { return 0; }
void *createNvOnnxParser_INTERNAL(void *network, void *logger, int version) { return 0; }
void *createNvOnnxParserRefitter_INTERNAL(void *refitter, void *logger, int version) { return 0; }
void *getBuilderPluginRegistry(int capability) { return 0; }
void *getPluginRegistry(void) { return 0; }
int getNvOnnxParserVersion(void) { return 0; }
int initLibNvInferPlugins(void *logger, const char *namespace_) { return 0; }
C
for lib in libnvinfer libnvinfer_plugin libnvonnxparser; do
  gcc -shared -fPIC -Wl,-soname,"$lib.so.$major" -o "$dir/lib/$lib.so.$major" "$dir/lib/stub.c"
done
echo "$version" > "$dir/VERSION"
LD_LIBRARY_PATH="$dir/lib" PYTHONPATH="$dir" python -c "import tensorrt_bindings as t; print('oracle ready: TensorRT', t.__version__)"
