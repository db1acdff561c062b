"""OTA channels (抖音, 美团, 携程, 乐冰雪): platform orders become our orders and tickets with plain voucher codes.

One adapter per platform (`cloud/channels/<code>.py`) behind `base.ChannelAdapter`; the shared machinery
(`service.py`: inbound notifications, idempotency, refunds; `calls.py`: the persisted verify calls) is the same
for every channel. Published rules and guesses per platform: `docs/ota/`.
"""
