-- a kind with a NUL byte
kind "LSTM\0x"
