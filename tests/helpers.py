"""Assertions shared by the tests of several packages (tests/ is on pytest's pythonpath)."""

import torch


def assert_same_detections(a, b, box_tol=0.01, score_tol=1e-4):
    """Equal multisets of detections: as many of each, and every detection of either list has
    one in the other with the same label, a score within score_tol and a box within box_tol px
    (the order may differ among near-equal scores). Matching both ways rather than one-to-one:
    boxes clipped to zero width at the border survive NMS (IoU 0/0) and can repeat."""
    assert len(a["boxes"]) == len(b["boxes"]) > 0
    same_label = a["labels"][:, None] == b["labels"][None, :]
    close_score = (a["scores"][:, None] - b["scores"][None, :]).abs() <= score_tol
    box_err = (a["boxes"][:, None, :] - b["boxes"][None, :, :]).abs().amax(-1)
    box_err = torch.where(same_label & close_score, box_err, torch.full_like(box_err, float("inf")))
    assert box_err.min(1).values.max().item() <= box_tol
    assert box_err.min(0).values.max().item() <= box_tol


def write_mp4(path, frames, fps=5):
    """An MPEG-4 video of PIL `frames` (PyAV, a declared dependency)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames[0].width, frames[0].height, "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_image(frame)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
