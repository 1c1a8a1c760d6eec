import torch

from whylens.evaluate import mass_inside, pointing_game


def test_mass_inside_and_pointing_game_on_hand_made_maps():
    maps = torch.zeros(3, 4, 4)
    maps[0, 0, 0], maps[0, 3, 3] = 3.0, 1.0     # 3/4 of the mass in the mask, max inside
    maps[1, 3, 3], maps[1, 0, 1] = 5.0, -7.0    # negative values carry no mass
    maps[2] = -1.0                              # nothing positive: undefined
    mask = torch.zeros(3, 4, 4)
    mask[:, :2, :2] = 1
    m = mass_inside(maps, mask)
    assert m[0] == 0.75 and m[1] == 0.0 and torch.isnan(m[2])
    assert pointing_game(maps[:2], mask[:2]).tolist() == [True, False]
    assert pointing_game(maps[1:2], mask[1:2], tolerance=2).tolist() == [True]
