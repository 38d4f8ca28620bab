
openbf16_residual"
output_datatypeFP32*
inputBF16*
residualBF162
output2
residual_sum: iğ‘U/ÛÍgÅ5‹Äu(Ä<©‰˜ÃÕbõAˆŞÑXØüM: iğ‘U/ÛÍgÅ5‹Äu(Ä<©‰˜ÃÕbõAˆŞÑXØüM