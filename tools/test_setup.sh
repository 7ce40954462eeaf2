#!/usr/bin/env bash
# System packages the GUI tests need (Xvfb and the xcb/GL libraries Qt's xcb plugin loads).
# Installs them when missing and we are root; otherwise the mesh-panel test skips with the reason.
set -u
need=()
command -v Xvfb >/dev/null 2>&1 || need+=(xvfb)
for lib in libxcb-icccm.so.4 libxcb-keysyms.so.1 libxcb-cursor.so.0 libxkbcommon-x11.so.0; do
  ldconfig -p 2>/dev/null | grep -q "$lib" || need+=(libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0 libxkbcommon-x11-0)
done
[ -e /usr/lib/x86_64-linux-gnu/dri/swrast_dri.so ] || [ -e /usr/lib/x86_64-linux-gnu/dri/llvmpipe_dri.so ] \
  || ldconfig -p | grep -q libGLX_mesa || need+=(libgl1-mesa-dri libgl1)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing GUI test packages: $(printf '%s\n' "${need[@]}" | sort -u | tr '\n' ' ')"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      xvfb libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0 libxkbcommon-x11-0 libgl1-mesa-dri libgl1 \
      libxcb-xinerama0 libxcb-randr0 libxcb-render-util0 libxcb-image0 libxcb-shape0 libegl1 libfontconfig1 \
      libdbus-1-3 >/dev/null) || echo "could not install GUI packages; Xvfb tests will skip"
  else
    echo "GUI packages missing and not root: Xvfb tests will skip"
  fi
fi
exit 0
