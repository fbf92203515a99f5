import base from './ava.config.js';

// `npm run test:qemu`: only the test that runs the agent in a real QEMU guest.
export default { ...base, files: ['dist/test/qemu/**/*.test.js'] };
