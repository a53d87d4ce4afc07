#!/usr/bin/env bash
# Build llama.cpp's llama-server from the llama.cpp sources vendored in the
# llama-cpp-python source package on PyPI (no other network), for the adapter
# test against a real llama-server. Cached: a second run only prints the path.
#   bash scripts/build-llama-server.sh     # prints the binary's path on stdout
set -euo pipefail
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
cache="${PHILS_LLAMA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/phils/llama-server-$version}"
binary="$cache/bin/llama-server"
if [[ -x "$binary" ]]; then echo "$binary"; exit 0; fi
if ! command -v cmake >/dev/null || ! command -v g++ >/dev/null; then  # on these machines already
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake g++ >&2
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
    "llama-cpp-python==$version" -d "$work" >&2
tar -xzf "$work"/llama_cpp_python-"$version".tar.gz -C "$work"
src="$work/llama_cpp_python-$version/vendor/llama.cpp"
# A portable AVX2 build: the native build segfaulted on AMX machines (TESTING-FACTS).
generator=(); command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S "$src" -B "$work/build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
    -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF >&2
cmake --build "$work/build" --target llama-server -j "$(nproc)" >&2
mkdir -p "$cache/bin"
cp "$work/build/bin/llama-server" "$binary.tmp" && mv "$binary.tmp" "$binary"
echo "$binary"
