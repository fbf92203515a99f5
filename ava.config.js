export default {
  // The QEMU guest test boots a VM for minutes: it has its own run (`npm run test:qemu`, ava.qemu.config.js).
  files: ['dist/test/**/*.test.js', '!dist/test/qemu/**'],
  timeout: '5m',
  concurrency: 2,
  workerThreads: false,
};
