"""A real RTSP server for the tests: GStreamer's gst-rtsp-server serving an MJPEG AVI as RTP/JPEG.

Run with Debian's python3 (python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-good):
    /usr/bin/python3 rtsp_server.py PORT CLIP
Serves rtsp://127.0.0.1:PORT/x on 127.0.0.1 only, paced in real time by the file's timestamps;
each client gets its own pipeline from the clip's first frame. SIGTERM stops it.
"""
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    port, clip = sys.argv[1], sys.argv[2]
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(f'( filesrc location="{clip}" ! avidemux ! jpegparse ! rtpjpegpay name=pay0 pt=26 )')
    server.get_mount_points().add_factory("/x", factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{port}")
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    loop.run()


if __name__ == "__main__":
    main()
