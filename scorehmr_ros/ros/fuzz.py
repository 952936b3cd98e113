"""
Fuzz entry point for the detection-message decoder.

``fuzz_detection_decoder(data)`` takes arbitrary bytes, deserialises them as a CDR
``scorehmr_ros_msgs/PersonDetectionArray`` (what arrives from DDS) and decodes it the way
the node does. Any exception other than a rejected message is a bug. Use with a coverage
fuzzer, e.g. ``atheris``::

    import atheris, sys
    from scorehmr_ros.ros.fuzz import fuzz_detection_decoder
    atheris.Setup(sys.argv, fuzz_detection_decoder)
    atheris.Fuzz()
"""

import math

from rclpy.serialization import deserialize_message
from scorehmr_ros_msgs.msg import PersonDetectionArray

from scorehmr_ros.ros import convert

#: Errors that mean "the input was rejected", not "the decoder broke".
REJECTIONS = (convert.InputError,)


def fuzz_detection_decoder(data: bytes) -> None:
    """
    Deserialise and decode one message; raise only on a decoder bug.

    :param data: arbitrary bytes.
    """
    try:
        msg = deserialize_message(bytes(data), PersonDetectionArray)
    except Exception:  # noqa: B902 - malformed CDR is rejected by rclpy, as in the node
        return
    try:
        decoded = convert.decode_detections(msg, cond_dim=None)
    except REJECTIONS:
        return
    for person in decoded.people:
        for row in person.keypoints.tolist():
            if not all(math.isfinite(v) for v in row) or row[2] < 0:
                raise AssertionError(f'decoder let a bad keypoint through: {row}')
