from execbridge.sandbox.slots import SlotAllocator


def test_lowest_free_slot_first_and_reuse_after_release():
    a = SlotAllocator([1, 2, 5])
    assert [a.take(), a.take(), a.take()] == [3, 4, 6]
    a.release(2)
    assert a.take() == 2
    assert 0 not in a and 2 in a
    assert SlotAllocator().take() == 1  # slot 0 belongs to the doctor's probe
