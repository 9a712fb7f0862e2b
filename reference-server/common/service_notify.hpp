#pragma once
/// Tells systemd (a `Type=notify` unit, packaging/systemd/) where the process stands:
/// `READY=1` once it serves, `STOPPING=1` when it starts to drain. Without a notify socket
/// (not started by systemd) or without libsystemd at build time it does nothing.
#ifdef MESHHUB_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

namespace meshhub::programs {

inline void notify_service([[maybe_unused]] const char* state) {
#ifdef MESHHUB_HAVE_SYSTEMD
  sd_notify(0, state);
#endif
}

}  // namespace meshhub::programs
