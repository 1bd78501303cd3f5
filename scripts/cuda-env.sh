# Sourced by scripts/cuda-device-check.sh and scripts/cuda-bundle.sh's CPU
# check: the environment an unpacked CUDA bundle runs in.
#   source scripts/cuda-env.sh BUNDLE_DIR CUDA_LIB_DIR
# LD_LIBRARY_PATH: CUDA's libraries (cuBLAS, cuRAND, NVRTC, the runtime),
# then the bundle's fontconfig and FreeType; FONTCONFIG_FILE: a config that
# knows only the bundle's DejaVu Sans, as every generic family, so charts
# draw the same text with or without fonts on the machine.
bundle_dir=$1
cuda_libs=$2
export LD_LIBRARY_PATH="$cuda_libs:$bundle_dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cat >"$bundle_dir/fonts/fonts.conf" <<CONF
<?xml version="1.0"?>
<!DOCTYPE fontconfig SYSTEM "fonts.dtd">
<fontconfig>
  <dir>$bundle_dir/fonts</dir>
  <cachedir>$bundle_dir/fonts/cache</cachedir>
  <alias><family>sans-serif</family><prefer><family>DejaVu Sans</family></prefer></alias>
  <alias><family>serif</family><prefer><family>DejaVu Sans</family></prefer></alias>
  <alias><family>monospace</family><prefer><family>DejaVu Sans</family></prefer></alias>
</fontconfig>
CONF
export FONTCONFIG_FILE="$bundle_dir/fonts/fonts.conf"
