"""The engine: what knows nothing of media.

Pipeline and stage contract, bounded queues, record schemas, stats, device, progress, IPC, the
sink and storage contracts and the run harness. It imports no media slice and no writer.
"""
