"""label_keyboard: a person's sparse reward from the keyboard (``ros2 run solar_ros label_keyboard``).

Press SPACE or ENTER when the task succeeds (e.g. the mug reaches the coaster): each press calls
/solar/label_success (std_srvs/Trigger, served by the recorder, which stores the label with the episode)
and prints the reply. ``q`` (or Ctrl-D) quits. In a terminal each key counts at once; with stdin not a
terminal (a pipe, a script) every line is one press and a line ``q`` quits. The same service can be called
from rqt's service caller or ``ros2 service call /solar/label_success std_srvs/srv/Trigger``.
"""
from __future__ import annotations

import sys
from typing import Iterator, TextIO

import rclpy
from std_srvs.srv import Trigger

from . import contract

PRESS_KEYS = (" ", "\n", "\r", "s")
QUIT_KEYS = ("q", "\x03", "\x04")


def keys(stream: TextIO) -> Iterator[str]:
    """The keys pressed: single characters from a terminal (cbreak mode, restored afterwards), else one per line
    (an empty line is ENTER). Ends at the end of the input."""
    if stream.isatty():
        import termios
        import tty

        fd = stream.fileno()
        saved = termios.tcgetattr(fd)
        try:
            tty.setcbreak(fd)
            while ch := stream.read(1):
                yield ch
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        return
    for line in stream:
        yield line.strip() or "\n"


def label(node, client, timeout: float = 5.0) -> str:
    """Call the success-label service once; the reply's message (or why there is none)."""
    if not client.wait_for_service(timeout_sec=timeout):
        return f"{contract.LABEL_SUCCESS} is not available (is the recorder running?)"
    future = client.call_async(Trigger.Request())
    rclpy.spin_until_future_complete(node, future, timeout_sec=timeout)
    reply = future.result()
    if reply is None:
        return f"no reply from {contract.LABEL_SUCCESS} within {timeout:g} s"
    return ("ok: " if reply.success else "refused: ") + reply.message


def main(args: list[str] | None = None, stream: TextIO | None = None) -> int:
    """Entry point: label on every press until ``q`` or the end of the input."""
    stream = sys.stdin if stream is None else stream
    rclpy.init(args=args)
    node = rclpy.create_node("label_keyboard")
    client = node.create_client(Trigger, contract.LABEL_SUCCESS)
    print("SPACE or ENTER: success now; q: quit", flush=True)
    try:
        for key in keys(stream):
            if key in QUIT_KEYS:
                break
            if key in PRESS_KEYS:
                print(label(node, client), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
